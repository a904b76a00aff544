"""The retrieval question set over ``docs/`` (written for this project).

Each question: (kind, question, expected) where expected is a list of
(document, evidence) pairs — evidence is a sentence piece of that document that
answers the question; a multi-hop question needs two. Unanswerable questions
expect nothing. Questions alternate dev / held-out within each kind (the first
of a kind is dev): tune on dev only, report both.
"""
from __future__ import annotations

PARAPHRASE = [
    ("The chat does not update until I press F5, what is wrong?", [("en/sync.md", "the WebSocket is almost always blocked")]),
    ("Can I get my money back if I cancel right after paying?", [("en/billing.md", "refunded in full")]),
    ("What happens to a person's account when they are removed from our company directory?", [("en/sso.md", "deactivated within 5 minutes")]),
    ("How long can I use the link to download my archive?", [("en/export.md", "valid for 7 days")]),
    ("I don't want my phone buzzing at night", [("en/notifications.md", "Quiet hours pause desktop and mobile notifications")]),
    ("How can my server be sure a callback request really came from Harbor?", [("en/api.md", "HMAC-SHA256")]),
    ("Someone took my phone; can the company wipe what the app stored on it?", [("en/mobile.md", "deletes its local cache")]),
    ("I threw away a document by mistake, is there a way to bring it back?", [("en/backups.md", "restored by its author or an administrator within 30 days")]),
    ("How do I get to a channel fast by typing part of its name?", [("en/shortcuts.md", "Ctrl+K opens the quick switcher")]),
    ("What machine do I need to run it on our own servers for a few hundred people?", [("en/self-hosting.md", "4 CPU cores, 8 GB of memory")]),
    ("公司打官司的时候，怎么防止员工把聊天记录删掉？", [("zh/retention.md", "即使被删除或超过保留期也会被保存下来")]),
    ("领导一直不批我的报销单会怎么样？", [("zh/workflow.md", "自动转交给审批人的上级")]),
    ("网页打开以后什么都不显示", [("zh/troubleshooting.md", "请清除浏览器缓存")]),
    ("外面合作公司的人能看到我们全部的频道吗？", [("zh/permissions.md", "只能看到被明确邀请进入的频道和页面")]),
    ("我们的资料放在哪个城市的机房？", [("zh/security.md", "上海的数据中心")]),
    ("AI 会不会拿我们写的东西去训练？", [("zh/ai-assistant.md", "不会被用来训练模型")]),
]

LEXICAL = [
    ("What does the Retry-After header tell me?", [("en/api.md", "Retry-After header giving the number of seconds")]),
    ("SCIM provisioning", [("en/sso.md", "With SCIM 2.0")]),
    ("break-glass account", [("en/sso.md", "Keep one owner account")]),
    ("annual billing discount on the Team plan", [("en/billing.md", "20 percent discount")]),
    ("offline bundle for air-gapped servers", [("en/self-hosting.md", "download the offline bundle")]),
    ("audit log events retention", [("en/audit-log.md", "Events are kept for 400 days")]),
    ("OCR for scanned PDFs in search", [("en/search.md", "recognised with OCR")]),
    ("email digest at 8:00", [("en/notifications.md", "one summary email at 8:00")]),
    ("point-in-time restore", [("en/backups.md", "roll a single space back to any minute of the last 7 days")]),
    ("Ctrl+Shift+M", [("en/shortcuts.md", "mutes or unmutes")]),
    ("保密协议模板有中英文版本吗", [("zh/templates.md", "中英文对照两个版本")]),
    ("加密密钥多久轮换一次", [("zh/security.md", "每九十天自动轮换一次")]),
    ("机器人每分钟最多发多少条消息", [("zh/integrations.md", "每分钟最多发送二十条消息")]),
    ("Confluence 导入需要什么格式", [("zh/import.md", "Confluence 需要导出为 HTML 格式")]),
    ("会议纪要多久生成", [("zh/calendar.md", "十分钟内生成会议纪要")]),
    ("3.0 版本的新编辑器", [("zh/changelog.md", "支持多人同时编辑同一段落")]),
]

CROSS_LANGUAGE = [
    ("Is there a template for a non-disclosure agreement?", [("zh/templates.md", "保密协议（NDA）")]),
    ("How many guests may each paid member invite?", [("zh/permissions.md", "最多可以邀请五名访客")]),
    ("Can a group chat in DingTalk or Feishu be mirrored into a channel?", [("zh/integrations.md", "双向同步")]),
    ("What is the largest attachment I can bring over when importing from Notion?", [("zh/import.md", "单个附件不能超过一百兆字节")]),
    ("How many times a month can a Team member use the AI assistant?", [("zh/ai-assistant.md", "每月可以使用五百次")]),
    ("What happens when the workspace runs out of storage space?", [("zh/storage.md", "无法再上传新文件")]),
    ("The login verification code never arrives", [("zh/troubleshooting.md", "请先检查垃圾邮件文件夹")]),
    ("Expense claims above a certain amount need an extra approver", [("zh/workflow.md", "金额超过五千元")]),
    ("单点登录支持哪些协议？", [("en/sso.md", "SAML 2.0 and OpenID Connect")]),
    ("导出的压缩包最大可以有多大？", [("en/export.md", "at most 2 GB")]),
    ("接口每分钟可以调用多少次？", [("en/api.md", "600 requests per minute")]),
    ("安卓版最低需要什么系统版本？", [("en/mobile.md", "Android 10 or later")]),
    ("每晚的快照保存多久？", [("en/backups.md", "kept for 35 days")]),
    ("自己部署的时候网页默认用哪个端口？", [("en/self-hosting.md", "port 8443")]),
    ("搜索时怎么只看某一个人发的消息？", [("en/search.md", "from:@name")]),
    ("没有网络的时候还能看到多少天的消息？", [("en/sync.md", "last 14 days")]),
]

SHORT_CHINESE = [
    ("法务模板", [("zh/templates.md", "合同审查清单")]),
    ("报销审批", [("zh/workflow.md", "发起报销审批时需要上传发票照片")]),
    ("访客限制", [("zh/permissions.md", "访客不能使用搜索查看历史消息")]),
    ("密钥轮换", [("zh/security.md", "每九十天自动轮换一次")]),
    ("法律保留", [("zh/retention.md", "对指定成员开启法律保留")]),
    ("会议提醒", [("zh/calendar.md", "会议开始前十五分钟提醒")]),
    ("验证码", [("zh/troubleshooting.md", "验证码十分钟内有效")]),
    ("存储扩容", [("zh/storage.md", "额外购买扩容包")]),
    ("单点登录", [("en/sso.md", "SAML 2.0 and OpenID Connect")]),
    ("免打扰时段", [("en/notifications.md", "Quiet hours pause desktop and mobile notifications")]),
    ("退款", [("en/billing.md", "refunded in full")]),
    ("快捷键", [("en/shortcuts.md", "Ctrl+/ shows every shortcut")]),
    ("飞书集成", [("zh/integrations.md", "飞书、钉钉或企业微信")]),
    ("导入失败", [("zh/import.md", "压缩包损坏或者格式不对")]),
    ("翻译", [("zh/ai-assistant.md", "翻译成十二种语言之一")]),
    ("数据备份", [("en/backups.md", "A snapshot of every workspace is taken each night")]),
]

MULTI_HOP = [
    ("On the Team plan, what does a member cost per month and how much storage does each member get?",
     [("en/billing.md", "8 dollars per member per month"), ("zh/storage.md", "每位付费成员二十 GB")]),
    ("团队版每人每月多少钱？AI 助手每月能用多少次？",
     [("en/billing.md", "8 dollars per member per month"), ("zh/ai-assistant.md", "每月可以使用五百次")]),
    ("How long does a deleted page stay in the trash, and how long is a deleted workspace recoverable?",
     [("en/backups.md", "restored by its author or an administrator within 30 days"), ("en/export.md", "stays recoverable for 30 days")]),
    ("Which plan has the audit log, and how long are its events kept?",
     [("en/billing.md", "adds single sign-on enforcement, the audit log"), ("en/audit-log.md", "Events are kept for 400 days")]),
    ("免费版能启用几个集成？消息历史能保留多久？",
     [("zh/integrations.md", "免费版最多启用三个集成"), ("en/billing.md", "90 days of message history")]),
    ("Which tools can I import from, and can I export a single page as Word?",
     [("zh/import.md", "Notion、Confluence、语雀和 Slack"), ("en/export.md", "exported as PDF or Word")]),
    ("开了免打扰还会收到会议提醒吗？免打扰时段怎么设置？",
     [("zh/calendar.md", "会议提醒仍然会照常发送"), ("en/notifications.md", "Quiet hours pause desktop and mobile notifications")]),
    ("How big may a single file be, and what should I check when an upload fails?",
     [("zh/storage.md", "单个文件最大两 GB"), ("zh/troubleshooting.md", "上传失败通常是网络不稳定")]),
    ("员工在身份系统里被删除后，他的账号和发过的消息会怎样？",
     [("en/sso.md", "deactivated within 5 minutes, their messages kept"), ("zh/retention.md", "他发送的消息和上传的文件仍会保留")]),
    ("How is data encrypted on the way to the server, and how are webhook deliveries signed?",
     [("zh/security.md", "TLS 1.3"), ("en/api.md", "HMAC-SHA256")]),
    ("3.2 版本新增的会议纪要是怎么生成的？",
     [("zh/changelog.md", "新增会议纪要自动生成功能"), ("zh/calendar.md", "十分钟内生成会议纪要")]),
    ("A finished approval can be archived as PDF; can an ordinary page be exported as PDF too?",
     [("zh/workflow.md", "导出为 PDF 归档"), ("en/export.md", "exported as PDF or Word")]),
]

UNANSWERABLE = [
    ("Can I pay the subscription with Bitcoin?", []),
    ("What is the phone number of the sales office in Berlin?", []),
    ("Is there a native desktop app for Linux?", []),
    ("How do I change the colour theme of the sidebar?", []),
    ("What is the longest allowed channel name?", []),
    ("Does Harbor have a Kanban board view?", []),
    ("Can I embed a channel in a WordPress site?", []),
    ("Who founded the company and when?", []),
    ("支持视频直播吗？", []),
    ("可以用比特币付款吗？", []),
    ("公司总部在哪里？", []),
    ("怎么修改频道的头像？", []),
    ("有没有甘特图功能？", []),
    ("客服电话是多少？", []),
    ("一个账号最多能创建多少个工作区？", []),
    ("可以在系统里打印名片吗？", []),
]

KINDS = {"paraphrase": PARAPHRASE, "lexical": LEXICAL, "cross-language": CROSS_LANGUAGE,
         "short-chinese": SHORT_CHINESE, "multi-hop": MULTI_HOP, "unanswerable": UNANSWERABLE}


def questions() -> list[dict]:
    """Every question as ``{"id", "kind", "split", "query", "expected": [(doc, evidence)]}``."""
    out = []
    for kind, items in KINDS.items():
        for n, (query, expected) in enumerate(items):
            out.append({"id": f"{kind}-{n + 1:02d}", "kind": kind, "split": "dev" if n % 2 == 0 else "held-out",
                        "query": query, "expected": expected})
    return out
