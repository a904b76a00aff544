"""Domain pack: the default team (butler, novelist, editor, translator, coder), created on first start."""
from __future__ import annotations

from pathlib import Path

from xiajiao import Pack, Persona, hookimpl

SOULS = Path(__file__).resolve().parent / "souls"

PERSONAS = [
    # id, name, English alias, avatar, description, tools
    ("butler", "虾饺管家", "Butler", "🦐", "虾饺团队的管家:回答问题、分派任务 / The team's butler",
     ["memory_write", "memory_search", "rag_query", "call_agent"]),
    ("novelist", "小说家", "Novelist", "✍️", "写小说、诗歌和故事 / Writes fiction and poems",
     ["memory_write", "memory_search"]),
    ("editor", "编辑", "Editor", "📝", "审稿、润色、提出修改意见 / Reviews and polishes drafts",
     ["memory_search", "rag_query"]),
    ("translator", "翻译官", "Translator", "🌐", "中英互译,保留语气 / Translates between Chinese and English", []),
    ("coder", "代码助手", "Coder", "💻", "写代码、解释代码、排查错误 / Writes and explains code",
     ["memory_search", "rag_query", "call_agent"]),
]


def personas() -> list[Persona]:
    return [Persona(id=pid, name=name, aliases=[alias], avatar=avatar, description=desc, tools=tools,
                    soul=(SOULS / f"{pid}.md").read_text(encoding="utf-8"), knowledge=pid in ("butler", "editor"))
            for pid, name, alias, avatar, desc, tools in PERSONAS]


@hookimpl
def register_packs(register):
    register(Pack(name="default", personas=personas(), default=True,
                  description="A small bilingual team: butler, novelist, editor, translator, coder"))
