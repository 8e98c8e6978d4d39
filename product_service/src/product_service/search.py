"""What a catalog search matches and how it ranks, the same on both databases.

A product matches `q` when any of these holds:

1. full text: `q` read like a web search box (PostgreSQL's `websearch_to_tsquery`:
   words all present, `"quoted phrases"`, `or`, `-excluded`), English stemming, over the
   SKU, name, category and description;
2. typo tolerance: every word of `q` is close to a word of the product (pg_trgm's
   `word_similarity` at least `TYPO_SIMILARITY`; words with a letter, not bare
   numbers): "keybord" finds keyboards;
3. substring: `q` appears as typed, ignoring case ("mse" finds SKU "MSE-002").

Most relevant first: a name or SKU equal to `q`, then the full-text rank (words in the
name weigh most, then SKU and category, then the description), then newest first.
Matches found only through 2 or 3 rank after word matches.

PostgreSQL does this with its own machinery (a generated, weighted `tsvector` with a GIN
index, `websearch_to_tsquery`, `ts_rank`, pg_trgm's GIN index for `%>` and `ILIKE`), so
it costs little at any catalog size. SQLite, the local default, has none of it: it calls
the functions below, row by row, which answer alike on a small catalog (its rank is a
simpler weighing of the same fields, and its words are split more simply).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

#: pg_trgm's default `word_similarity_threshold`, which its `%>` operator uses.
TYPO_SIMILARITY = 0.6
#: Words of `q` checked for typos (each costs an index lookup on PostgreSQL).
MAX_TYPO_WORDS = 8

# PostgreSQL's English stop words (tsearch_data/english.stop): never searched for.
_STOP_WORDS_TEXT = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what which
    who whom this that these those am is are was were be been being have has had having do
    does did doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in out on
    off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will
    just don should now"""
_STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_WORD = re.compile(r"[^\W_]+")
_TERM = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')
# A snowball stemmer keeps the word it works on in its own fields, and SQLite calls the
# rules below from each of its connections' threads (aiosqlite) at once: one stemmer
# per thread, or two searches at the same moment garble each other's words (a 500).
_stemmers = threading.local()


def _stem(word: str) -> str:
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        stemmer = _stemmers.english = snowballstemmer.stemmer("english")
    stemmed: str = stemmer.stemWord(word)
    return stemmed


# Full-text weights of the fields, as PostgreSQL's ts_rank weighs A, B and C.
_NAME, _LABELS, _DESCRIPTION = 1.0, 0.4, 0.2


def words(text: str) -> list[str]:
    """The words of `text`, lowercased, as pg_trgm splits them (letters and digits)."""
    return _WORD.findall(text.lower())


def _terms(q: str) -> list[tuple[bool, str]]:
    """The terms of `q` as a search box reads them: (excluded, text)."""
    return [
        (bool(match.group(1) or match.group(3)), match.group(2) or match.group(4) or "")
        for match in _TERM.finditer(q)
    ]


def typo_words(q: str) -> list[str]:
    """The words of `q` that typo tolerance checks one by one (not the excluded ones)."""
    wanted = " ".join(text for excluded, text in _terms(q) if not excluded and text.lower() != "or")
    return words(wanted)[:MAX_TYPO_WORDS]


def exclusions(q: str) -> str | None:
    """The `-excluded` terms of `q`, as a search of their own (None when there are none);
    a product that has one of them is no match, however else it matched."""
    excluded = [
        f'-"{text}"'
        for is_excluded, text in _terms(q)
        if is_excluded and any(lexeme is not None for lexeme in _lexemes(text))
    ]
    return " ".join(excluded) or None


def has_words(q: str) -> bool:
    """Whether `q` asks for any word (not only stop words or exclusions): else full text
    matches nothing, as an empty tsquery does."""
    return bool(_positive(_parse(q)))


def _lexemes(text: str) -> list[str | None]:
    """Stemmed words of `text`; stop words keep their place as None (for phrases)."""
    return [None if word in _STOP_WORDS else _stem(word) for word in words(text)]


@dataclass(frozen=True)
class _Item:
    phrase: tuple[str | None, ...]
    excluded: bool

    def found_in(self, lexemes: Sequence[str | None]) -> bool:
        width = len(self.phrase)
        return any(
            all(want is None or want == lexemes[start + i] for i, want in enumerate(self.phrase))
            for start in range(len(lexemes) - width + 1)
        )


@lru_cache(maxsize=256)
def _parse(q: str) -> tuple[tuple[_Item, ...], ...]:
    """`q` as web search terms: all groups must hold; one item of a group is enough."""
    groups: list[list[_Item]] = []
    join_next = False
    for match in _TERM.finditer(q):
        minus = match.group(1) or match.group(3)
        text = match.group(2) if match.group(2) is not None else match.group(4)
        if match.group(4) is not None and text.lower() == "or" and groups:
            join_next = True
            continue
        phrase = tuple(_lexemes(text))
        while phrase and phrase[0] is None:
            phrase = phrase[1:]
        while phrase and phrase[-1] is None:
            phrase = phrase[:-1]
        if not phrase:
            continue
        item = _Item(phrase, excluded=bool(minus))
        if join_next:
            groups[-1].append(item)
        else:
            groups.append([item])
        join_next = False
    return tuple(tuple(group) for group in groups)


def _positive(groups: tuple[tuple[_Item, ...], ...]) -> list[_Item]:
    return [item for group in groups for item in group if not item.excluded]


def full_text_matches(q: str, fields: Sequence[str]) -> bool:
    if not has_words(q):
        return False
    groups = _parse(q)
    lexemes = _lexemes(" ".join(fields))
    return all(any(item.found_in(lexemes) != item.excluded for item in group) for group in groups)


def _excludes_nothing(excluded: str, fields: Sequence[str]) -> bool:
    lexemes = _lexemes(" ".join(fields))
    return not any(item.found_in(lexemes) for group in _parse(excluded) for item in group)


def _trigrams(text: str) -> list[str]:
    """pg_trgm's trigrams of `text`, in order: each word padded with two blanks in
    front and one behind."""
    found: list[str] = []
    for word in words(text):
        padded = f"  {word} "
        found.extend(padded[i : i + 3] for i in range(len(padded) - 2))
    return found


def word_similarity(needle: str, haystack: str) -> float:
    """pg_trgm's `word_similarity`: how well `needle` matches the best continuous
    extent of `haystack`'s trigrams (shared / (needle's + extent's - shared), unique)."""
    wanted = set(_trigrams(needle))
    if not wanted:
        return 0.0
    ordered = _trigrams(haystack)
    hits = [i for i, trigram in enumerate(ordered) if trigram in wanted]
    best = 0.0
    for start in hits:
        seen: set[str] = set()
        for end in range(start, len(ordered)):
            seen.add(ordered[end])
            shared = len(wanted & seen)
            best = max(best, shared / (len(wanted) + len(seen) - shared))
    return best


def catalog_words(text: str) -> list[str]:
    """The words of `text` a misspelt word may be corrected to: those with a letter
    (PostgreSQL keeps them in `catalog_word`; SKU digits alone are none)."""
    return [word for word in words(text) if not word.isdigit()]


def _close_to_one_of(word: str, candidates: Sequence[str]) -> bool:
    return any(word_similarity(word, candidate) >= TYPO_SIMILARITY for candidate in candidates)


def matches(q: str, sku: str, name: str, category: str, description: str) -> bool:
    fields = (sku, name, category, description)
    excluded = exclusions(q)
    if excluded is not None and not _excludes_nothing(excluded, fields):
        return False
    document = " ".join(fields)
    if q.lower() in document.lower():
        return True
    typo = typo_words(q)
    if typo and all(_close_to_one_of(word, catalog_words(document)) for word in typo):
        return True
    return full_text_matches(q, fields)


def rank(q: str, sku: str, name: str, category: str, description: str) -> float:
    """The full-text weight of a match: each term counts its weightiest field."""
    items = _positive(_parse(q))
    fields = (
        (_NAME, _lexemes(name)),
        (_LABELS, _lexemes(f"{sku} {category}")),
        (_DESCRIPTION, _lexemes(description)),
    )
    total = 0.0
    for item in items:
        total += max((weight for weight, lexemes in fields if item.found_in(lexemes)), default=0)
    return total
