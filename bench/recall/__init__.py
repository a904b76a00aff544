"""The project's memory evaluation: a long conversation's facts written one by one (with updates
that supersede older facts, and restated duplicates), then asked in other words and in the
other language through the memory search of the real server.

A question is answered when the current version of its fact is in the first k memories;
``superseded_first`` counts questions where an outdated version ranks above the current one.
"""
from __future__ import annotations

# (key, content, supersedes key or None). A key written twice without "supersedes" restates
# the same fact (a duplicate); with it, the fact changed.
CONVERSATION: list[tuple[str, str, str | None]] = [
    ("name", "The user's name is Lin Yue; colleagues call her Yue.", None),
    ("city", "Lin lives in Hangzhou, close to West Lake.", None),
    ("job", "Lin works as a product manager at a logistics start-up.", None),
    ("team", "Lin's team has seven people: four engineers, a designer, a tester and Lin.", None),
    ("cat", "Lin has a grey cat called Doudou.", None),
    ("coffee", "Lin drinks oat-milk latte and no sugar.", None),
    ("allergy", "Lin is allergic to peanuts.", None),
    ("lang", "Lin prefers answers in Chinese, with English technical terms kept as they are.", None),
    ("birthday", "Lin's birthday is on 14 March.", None),
    ("manager", "Lin reports to Zhou Ming, the head of product.", None),
    ("project", "Lin's current project is a route-planning dashboard for delivery drivers.", None),
    ("deadline", "The dashboard's first release is due on 30 June.", None),
    ("stack", "The dashboard front end is written in Vue 3 with TypeScript.", None),
    ("db", "The project stores its data in PostgreSQL 15.", None),
    ("standup", "The team's stand-up meeting is at 9:30 every weekday.", None),
    ("gym", "Lin goes swimming on Tuesday and Thursday evenings.", None),
    ("car", "Lin drives an electric car, a white BYD Dolphin.", None),
    ("commute", "Lin's commute to the office takes about 25 minutes.", None),
    ("name", "Her name is Lin Yue, and people at work call her Yue.", None),
    ("book", "Lin is reading The Three-Body Problem in the evenings.", None),
    ("music", "Lin listens to jazz piano while working.", None),
    ("laptop", "Lin works on a 14-inch MacBook Pro.", None),
    ("tz", "Lin's working hours are 10:00 to 19:00 China Standard Time.", None),
    ("kid", "Lin has a six-year-old son named Xiaobao.", None),
    ("school", "Xiaobao goes to a primary school near Wensan Road.", None),
    ("holiday", "Lin plans a family trip to Yunnan in October.", None),
    ("cat", "Lin's cat is a grey cat named Doudou.", None),
    ("food", "Lin's favourite dish is West Lake vinegar fish.", None),
    ("phone", "Lin uses a Huawei Mate phone.", None),
    ("deadline", "The dashboard's first release moved to 15 July because the map provider changed.", "deadline"),
    ("vendor", "The map data comes from Amap (Gaode).", None),
    ("vendor", "The project switched its map data from Amap to Tencent Maps.", "vendor"),
    ("budget", "The project's budget for this year is 800,000 yuan.", None),
    ("client", "The first customer of the dashboard is a cold-chain delivery company in Ningbo.", None),
    ("meeting", "Lin has a weekly one-to-one with Zhou Ming on Friday at 16:00.", None),
    ("coffee", "Lin drinks oat-milk latte without sugar.", None),
    ("city", "Lin moved from Hangzhou to Shanghai in May for the new office.", "city"),
    ("standup", "The stand-up meeting moved to 10:00 because two engineers work from Shanghai.", "standup"),
    ("hobby", "Lin is learning to play the guqin.", None),
    ("editor", "Lin writes product specs in Feishu Docs.", None),
    ("review", "Design reviews happen every second Wednesday.", None),
    ("tester", "The tester on Lin's team is called Chen Jing.", None),
    ("designer", "The designer on Lin's team is called Wang Lei.", None),
    ("gym", "Lin now swims on Monday and Wednesday mornings instead of the evenings.", "gym"),
    ("car", "Lin sold the car and now takes the metro to work.", "car"),
    ("stack", "The dashboard front end was rewritten in React with TypeScript.", "stack"),
    ("goal", "Lin's goal for the year is to cut average delivery time by 15 percent.", None),
    ("metric", "The dashboard tracks on-time delivery rate as its main metric.", None),
    ("risk", "The biggest project risk is the accuracy of traffic data at rush hour.", None),
    ("manager", "Lin now reports to Sun Hao, the new vice president of product.", "manager"),
    ("tea", "In the afternoon Lin drinks Longjing green tea.", None),
    ("music", "Lin listens to jazz piano music when she works.", None),
    ("plant", "Lin keeps a small bonsai on the office desk.", None),
    ("team", "Lin's team grew to nine people after two engineers joined in August.", "team"),
    ("language", "Lin is taking Japanese lessons on Saturday mornings.", None),
    ("laptop", "Lin works on a 14 inch MacBook Pro laptop.", None),
]

# (key of the fact whose current version answers, question)
QUESTIONS: list[tuple[str, str]] = [
    ("city", "Which city does Lin live in now?"),
    ("city", "林现在住在哪个城市？"),
    ("deadline", "When is the first version of the dashboard supposed to ship?"),
    ("deadline", "看板第一版什么时候上线？"),
    ("vendor", "Which company provides the map data?"),
    ("vendor", "地图数据用的是哪家的？"),
    ("standup", "What time is the daily stand-up?"),
    ("standup", "每天的站会几点开？"),
    ("gym", "When does Lin go swimming?"),
    ("gym", "林什么时候去游泳？"),
    ("car", "How does Lin get to work?"),
    ("car", "林怎么去上班？"),
    ("stack", "Which framework is the dashboard's front end built with?"),
    ("stack", "看板前端用什么框架写的？"),
    ("manager", "Who is Lin's boss?"),
    ("manager", "林的上级是谁？"),
    ("team", "How many people are on Lin's team?"),
    ("team", "林的团队有多少人？"),
    ("allergy", "Is there any food Lin cannot eat?"),
    ("allergy", "林对什么过敏？"),
    ("cat", "What is the name of Lin's pet?"),
    ("cat", "林的猫叫什么名字？"),
    ("coffee", "How does Lin take her coffee?"),
    ("kid", "Does Lin have children?"),
    ("kid", "林的孩子多大了？"),
    ("birthday", "When should we congratulate Lin on her birthday?"),
    ("lang", "In which language should replies to Lin be written?"),
    ("budget", "How much money does the project have this year?"),
    ("budget", "项目今年的预算是多少？"),
    ("client", "Who is the first customer of the dashboard?"),
    ("risk", "What is the main risk for the project?"),
    ("risk", "项目最大的风险是什么？"),
    ("tester", "Who tests the software on Lin's team?"),
    ("designer", "谁是团队的设计师？"),
    ("holiday", "Where is Lin going on vacation?"),
    ("holiday", "林十月份去哪里旅行？"),
    ("hobby", "林在学什么乐器？"),
    ("tea", "What does Lin drink in the afternoon?"),
    ("goal", "林今年的目标是什么？"),
    ("db", "Which database does the project use?"),
    ("meeting", "When does Lin meet her manager one to one?"),
    ("editor", "林用什么工具写产品文档？"),
]


def questions() -> list[dict]:
    """Every question with its split: alternating dev / held-out in the order above."""
    return [{"key": key, "query": q, "split": "dev" if n % 2 == 0 else "held-out"}
            for n, (key, q) in enumerate(QUESTIONS)]


async def write_all(client, agent_id: str, *, hints: bool = True) -> tuple[dict[str, str], dict[str, set[str]], dict]:
    """Write the conversation; returns (current memory id per key, outdated ids per key, status counts).

    With ``hints`` an update names the memory it replaces (``supersedes``), as the agent does when
    the older fact is in its prompt; without, only the near-duplicate merge can catch it."""
    current: dict[str, str] = {}
    outdated: dict[str, set[str]] = {}
    statuses: dict[str, int] = {}
    for key, content, replaces in CONVERSATION:
        body = {"content": content}
        if hints and replaces:
            body["supersedes"] = current[replaces]
        r = await client.post(f"/api/agents/{agent_id}/memories", json=body)
        r.raise_for_status()
        data = r.json()
        statuses[data["status"]] = statuses.get(data["status"], 0) + 1
        uid = data["memory"]["id"]
        if replaces and current.get(key) and current[key] != uid:
            outdated.setdefault(key, set()).add(current[key])
        current[key] = uid
    return current, outdated, statuses


async def evaluate(server, *, hints: bool = True, limit: int = 0) -> dict:
    from ..chatclient import create_agent

    async with server.client() as client:
        # only the conversation's memories: the load profile's seeded ones would compete too
        agent_id = await create_agent(client, "Memory eval", model=None, seed=False)
        current, outdated, statuses = await write_all(client, agent_id, hints=hints)
        held = (await client.get(f"/api/agents/{agent_id}/memories", params={"limit": 1})).json()["total"]
        rows = []
        for q in questions()[:limit or None]:
            r = await client.get(f"/api/agents/{agent_id}/memories", params={"q": q["query"], "limit": 5})
            r.raise_for_status()
            ids = [m["id"] for m in r.json()["memories"]]
            rank = ids.index(current[q["key"]]) + 1 if current[q["key"]] in ids else 0
            old = [ids.index(o) + 1 for o in outdated.get(q["key"], ()) if o in ids]
            rows.append({**q, "rank": rank, "superseded_first": bool(old) and (not rank or min(old) < rank)})
    out: dict = {"writes": len(CONVERSATION), "memories": held, "statuses": statuses, "questions": len(rows)}
    for split in ("dev", "held-out"):
        part = [r for r in rows if r["split"] == split]
        out[split] = {f"current_r{k}": round(sum(0 < r["rank"] <= k for r in part) / max(1, len(part)), 3)
                      for k in (1, 3, 5)}
        out[split]["superseded_first"] = round(sum(r["superseded_first"] for r in part) / max(1, len(part)), 3)
    out["misses"] = [f"{r['split']} {r['query']} (rank {r['rank']})" for r in rows if not 0 < r["rank"] <= 3]
    return out
