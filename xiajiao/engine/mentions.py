"""Finding ``@mentions`` of agents in a message, Chinese or English, with punctuation around them."""
from __future__ import annotations

ALL_WORDS = ("all", "everyone", "所有人", "全体", "大家")
AT_SIGNS = ("@", "＠")


def _names(agent: dict) -> list[str]:
    config = agent.get("config") or {}
    return [agent["name"], *config.get("aliases", []), agent["id"]]


def _word_ends(key: str, following: str) -> bool:
    """An ASCII name must not run into more ASCII letters (``@Bob`` is not ``@Bobby``)."""
    if not following or not (key[-1].isascii() and key[-1].isalnum()):
        return True
    return not (following.isascii() and (following.isalnum() or following == "_"))


def find_mentions(text: str, agents: list[dict]) -> tuple[list[str], bool]:
    """(ids of the agents mentioned, in order of first mention; whether ``@all`` was used)."""
    keys = sorted(((n.casefold(), a["id"]) for a in agents for n in _names(a) if n), key=lambda k: -len(k[0]))
    found: list[str] = []
    everyone = False
    folded = (text or "").casefold()
    for i, ch in enumerate(folded):
        if ch not in AT_SIGNS:
            continue
        rest = folded[i + 1:]
        for key, agent_id in keys:
            if rest.startswith(key) and _word_ends(key, rest[len(key):len(key) + 1]):
                if agent_id not in found:
                    found.append(agent_id)
                break
        else:
            for word in ALL_WORDS:
                if rest.startswith(word) and _word_ends(word, rest[len(word):len(word) + 1]):
                    everyone = True
                    break
    return found, everyone
