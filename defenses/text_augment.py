"""Text augmentation for the defenses: EDA and TA-Cleaner's sub-captions, over WordNet.

EDA (Wei & Zou, EMNLP 2019, "EDA: Easy Data Augmentation Techniques for Boosting
Performance on Text Classification Tasks"), as CleanCLIP (Bansal et al., ICCV 2023) and
RoCLIP (Yang et al., NeurIPS 2023) use it: **one** operation drawn uniformly among
synonym replacement (SR), random insertion (RI), random swap (RS) and random deletion
(RD), with ``n = max(1, floor(alpha * words))`` and ``alpha = 0.1`` (RD deletes each word
with probability ``alpha``). Synonyms are WordNet's: every lemma of every synset of the
word, underscores/hyphens read as spaces, the word itself excluded (EDA's
``get_synonyms``). SR and RI skip EDA's stop words. Everything is drawn from a
``numpy`` generator, so an augmentation is a pure function of (caption, seed).

Documented deviation: EDA's preprocessing lower-cases the sentence and deletes every
non-letter (``get_only_chars``). Here words are whitespace tokens, punctuation stays
attached to its word (synonyms are looked up on the letters only and the punctuation
is put back), so that augmented captions keep the data's format ("a photo of a tee.").

WordNet. Three sources of synonyms (:func:`load_lexicon`):

- ``subset``: :data:`SUBSET_PATH`, shipped with the package, built by
  ``python -m defenses.text_augment --build-subset`` from full WordNet 3.0 for exactly the
  vocabulary of the embedded captions (training, zero-shot and poisoned templates, class
  names and modifiers). On those captions it gives *identical* results to full WordNet,
  without needing WordNet at run time (the embedded default).
- ``full``: ``nltk.corpus.wordnet`` (real captions). NLTK's data cannot always be
  downloaded; :func:`setup_wordnet` (``python -m defenses.text_augment --setup-wordnet
  DIR``) builds an NLTK ``wordnet`` corpus from Debian's ``wordnet-base`` files.
- ``auto`` (default): the subset for the words it covers, full WordNet for any other word
  (loaded only when such a word appears). Since the subset was computed from full
  WordNet, ``auto`` equals ``full`` everywhere.

TA-Cleaner's sub-captions use this module's lexicon and word splitting; they are built
in one place, ``defenses.ta_cleaner.SubCaptioner``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

SUBSET_PATH = Path(__file__).parent / "data" / "wordnet_subset.json"
SYSTEM_WORDNET = Path("/usr/share/wordnet")

#: EDA's stop-word list (Wei & Zou's ``eda.py``), excluded from SR and RI.
STOP_WORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it its
itself they them their theirs themselves what which who whom this that these those am is are was were be been being
have has had having do does did doing a an the and but if or because as until while of at by for with about against
between into through during before after above below to from up down in out on off over under again further then once
here there when where why how all any both each few more most other some such no nor not only own same so than too very
s t can will just don should now
""".split())

#: WordNet 3.0's 45 lexicographer files, as documented in lexnames(5WN): number, name and
#: syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb). NLTK needs this file.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1),
    ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1), ("noun.cognition", 1), ("noun.communication", 1),
    ("noun.event", 1), ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1), ("noun.location", 1),
    ("noun.motive", 1), ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1),
    ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2), ("verb.change", 2),
    ("verb.cognition", 2), ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2),
    ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2),
    ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2), ("adj.ppl", 3),
)
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj",
                 "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc", "index.sense", "cntlist.rev")

HOW_TO_GET_WORDNET = (
    "WordNet for NLTK is missing: with internet run python -c \"import nltk; nltk.download('wordnet')\"; "
    "offline install Debian's wordnet-base and wordnet-sense-index packages (apt-get install wordnet-base "
    "wordnet-sense-index) and run python -m defenses.text_augment --setup-wordnet ~/nltk_data"
)

_WORD = re.compile(r"^([^A-Za-z]*)([A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z])([^A-Za-z]*)$")


class WordNetMissingError(RuntimeError):
    """Full WordNet was needed but NLTK cannot read it; the message says how to get it."""


# ------------------------------------------------------------------------ WordNet access
def setup_wordnet(nltk_data: str | os.PathLike, source: str | os.PathLike = SYSTEM_WORDNET) -> Path:
    """Build ``<nltk_data>/corpora/wordnet/`` from a WordNet 3.0 database folder.

    ``source`` is where Debian's ``wordnet-base`` puts the database (``/usr/share/wordnet``).
    NLTK refuses to read that folder directly (it expects its own layout and a
    ``lexnames`` file), so the files are copied and ``lexnames`` is written from
    :data:`LEXNAMES`. Put ``nltk_data`` on ``NLTK_DATA`` (``~/nltk_data`` is searched by
    default). Returns the corpus folder.
    """
    source = Path(source)
    missing = [f for f in WORDNET_FILES[:12] if not (source / f).is_file()]
    if missing:
        raise WordNetMissingError(f"{source} lacks {', '.join(missing)}; " + HOW_TO_GET_WORDNET)
    dest = Path(nltk_data).expanduser() / "corpora" / "wordnet"
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORDNET_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
    (dest / "lexnames").write_text("".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES)))
    return dest


@lru_cache(maxsize=1)
def nltk_wordnet():
    """NLTK's WordNet reader, or :class:`WordNetMissingError` with the fix."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        raise WordNetMissingError(HOW_TO_GET_WORDNET) from None


def wordnet_available() -> bool:
    try:
        nltk_wordnet()
        return True
    except WordNetMissingError:
        nltk_wordnet.cache_clear()
        return False


_POS_NAMES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}


def full_synonyms(word: str) -> list[str]:
    """EDA's ``get_synonyms`` on full WordNet: sorted, the word itself excluded."""
    wn = nltk_wordnet()
    out: set[str] = set()
    for syn in wn.synsets(word):
        for lemma in syn.lemmas():
            name = lemma.name().replace("_", " ").replace("-", " ").lower()
            name = "".join(ch for ch in name if ch in "qwertyuiopasdfghjklzxcvbnm ")
            if name and name != word:
                out.add(name)
    return sorted(out)


def full_pos(word: str) -> list[str]:
    """Parts of speech WordNet knows ``word`` as (noun, verb, adj, adv), sorted."""
    wn = nltk_wordnet()
    return sorted({_POS_NAMES[s.pos()] for s in wn.synsets(word)})


class Lexicon(Protocol):
    def synonyms(self, word: str) -> list[str]: ...

    def pos(self, word: str) -> list[str]: ...


@dataclass
class WordNetLexicon:
    """Synonyms and parts of speech: the shipped subset first, full WordNet otherwise."""

    subset: dict[str, dict] = field(default_factory=dict)
    use_full: bool = True

    def _entry(self, word: str) -> dict:
        word = word.lower()
        if word in self.subset:
            return self.subset[word]
        if not self.use_full:
            return {"synonyms": [], "pos": []}
        entry = {"synonyms": full_synonyms(word), "pos": full_pos(word)}
        self.subset[word] = entry  # memoise
        return entry

    def synonyms(self, word: str) -> list[str]:
        return list(self._entry(word)["synonyms"])

    def pos(self, word: str) -> list[str]:
        return list(self._entry(word)["pos"])


@lru_cache(maxsize=1)
def _subset_entries() -> dict[str, dict]:
    if not SUBSET_PATH.is_file():
        raise FileNotFoundError(f"{SUBSET_PATH} is missing; rebuild it with python -m defenses.text_augment --build-subset")
    return json.loads(SUBSET_PATH.read_text())["words"]


def load_lexicon(source: str = "auto") -> WordNetLexicon:
    """``auto`` (subset, then full WordNet for other words), ``subset`` or ``full``."""
    if source == "auto":
        return WordNetLexicon(dict(_subset_entries()), use_full=True)
    if source == "subset":
        return WordNetLexicon(dict(_subset_entries()), use_full=False)
    if source == "full":
        nltk_wordnet()  # fail early with the fix
        return WordNetLexicon({}, use_full=True)
    raise ValueError(f"unknown WordNet source {source!r}; choose auto, subset or full")


# ------------------------------------------------------------------------------ tokens
def split_word(token: str) -> tuple[str, str, str]:
    """``(prefix, word, suffix)``: the letters of a token and its punctuation."""
    m = _WORD.match(token)
    return (m.group(1), m.group(2), m.group(3)) if m else (token, "", "")


def caption_words(caption: str) -> list[str]:
    """Lower-cased words of a caption (punctuation stripped)."""
    return [w.lower() for w in (split_word(t)[1] for t in caption.split()) if w]


# --------------------------------------------------------------------------------- EDA
@dataclass(frozen=True)
class EDAConfig:
    """EDA's settings; ``alpha`` = 0.1 for all four operations (CleanCLIP, RoCLIP)."""

    alpha: float = 0.1
    operations: tuple[str, ...] = ("sr", "ri", "rs", "rd")


def synonym_replacement(tokens: list[str], n: int, rng: np.random.Generator, lex: Lexicon) -> list[str]:
    out = list(tokens)
    candidates = [i for i, t in enumerate(out) if (w := split_word(t)[1]) and w.lower() not in STOP_WORDS]
    order = rng.permutation(len(candidates)) if candidates else []
    replaced = 0
    for k in order:
        i = candidates[int(k)]
        pre, word, post = split_word(out[i])
        syns = lex.synonyms(word.lower())
        if syns:
            out[i] = pre + syns[int(rng.integers(len(syns)))] + post
            replaced += 1
        if replaced >= n:
            break
    return " ".join(out).split()


def random_insertion(tokens: list[str], n: int, rng: np.random.Generator, lex: Lexicon) -> list[str]:
    out = list(tokens)
    for _ in range(n):
        content = [split_word(t)[1].lower() for t in out]
        content = [w for w in content if w and w not in STOP_WORDS]
        for _attempt in range(10):  # EDA tries 10 random words for one with synonyms
            if not content:
                break
            syns = lex.synonyms(content[int(rng.integers(len(content)))])
            if syns:
                out.insert(int(rng.integers(len(out) + 1)), syns[int(rng.integers(len(syns)))])
                break
    return " ".join(out).split()


def random_swap(tokens: list[str], n: int, rng: np.random.Generator) -> list[str]:
    out = list(tokens)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = (int(v) for v in rng.choice(len(out), size=2, replace=False))
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(tokens: list[str], p: float, rng: np.random.Generator) -> list[str]:
    if len(tokens) <= 1:
        return list(tokens)
    keep = [t for t in tokens if rng.random() > p]
    return keep if keep else [tokens[int(rng.integers(len(tokens)))]]


def eda(caption: str, rng: np.random.Generator, lexicon: Lexicon, config: EDAConfig = EDAConfig()) -> str:
    """One EDA operation (drawn uniformly from ``config.operations``) applied to ``caption``."""
    tokens = caption.split()
    if not tokens:
        return caption
    n = max(1, int(config.alpha * len(tokens)))
    op = config.operations[int(rng.integers(len(config.operations)))]
    if op == "sr":
        out = synonym_replacement(tokens, n, rng, lexicon)
    elif op == "ri":
        out = random_insertion(tokens, n, rng, lexicon)
    elif op == "rs":
        out = random_swap(tokens, n, rng)
    elif op == "rd":
        out = random_deletion(tokens, config.alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {op!r}; use sr, ri, rs or rd")
    return " ".join(out)


class CaptionAugmenter:
    """Seeded EDA of batches of captions.

    ``mode="once"`` (CleanCLIP's reference code: EDA computed once per caption when the
    data is loaded) keys the augmentation on the sample's dataset index, so a sample
    keeps one augmented caption for the whole run; ``"per_step"`` draws a fresh one every
    time (RoCLIP's per-epoch augmentation).
    """

    def __init__(self, seed: int, lexicon: Lexicon | None = None, config: EDAConfig = EDAConfig(), mode: str = "once"):
        if mode not in ("once", "per_step"):
            raise ValueError(f"unknown EDA mode {mode!r}; choose once or per_step")
        self.seed = seed
        self.lexicon = lexicon if lexicon is not None else load_lexicon("auto")
        self.config = config
        self.mode = mode
        self._once: dict[tuple[int, str], str] = {}
        self._rng = np.random.default_rng([seed, 0xEDA])

    def __call__(self, captions: Sequence[str], index: Iterable[int] | None = None) -> list[str]:
        if self.mode == "per_step" or index is None:
            return [eda(c, self._rng, self.lexicon, self.config) for c in captions]
        out = []
        for c, i in zip(captions, index):
            key = (int(i), c)
            if key not in self._once:
                self._once[key] = eda(c, np.random.default_rng([self.seed, 0xEDA, int(i)]), self.lexicon, self.config)
            out.append(self._once[key])
        return out


def rewrites_ahead(augmenter: "CaptionAugmenter | None", dataset, epoch: int) -> list[str]:
    """Every caption's EDA rewrite, drawn now, for an objective's :meth:`~benchmark.losses.Objective.texts`:
    only in the first epoch, only for ``mode="once"`` (a ``per_step`` draw is not known ahead)
    and for data whose captions are a list indexed like the batches' ``index`` (the
    in-memory sets). The draws are the ones the batches will get (keyed on index and caption)."""
    captions = getattr(dataset, "captions", None)
    if augmenter is None or augmenter.mode != "once" or epoch != 1 or not isinstance(captions, list):
        return []
    return augmenter(captions, range(len(captions)))


# ------------------------------------------------------------------ the shipped subset
def embedded_vocabulary() -> list[str]:
    """Every word that can occur in an embedded caption (frames, templates, names, attribute
    phrases: :func:`benchmark.embedded_caption_phrases`; EDA is applied once, to an
    original caption, so no other word is ever looked up)."""
    from benchmark import embedded_caption_phrases

    words: set[str] = set()
    for phrase in embedded_caption_phrases():
        words.update(caption_words(phrase.replace("{pronoun}", " ").replace("{}", " ")))
    return sorted(words)


#: synonym hops beyond the caption vocabulary that the subset must cover. EDA's random
#: insertion inserts n = max(1, int(alpha * tokens)) synonyms and draws each from the words
#: present *so far* (EDA's reference ``add_word``), so the n-th insertion may look up a
#: synonym inserted before it: with alpha 0.1 and captions of at most 29 tokens, n <= 2,
#: hence one hop (``tests/test_defenses_text.py`` checks the caption lengths).
SUBSET_HOPS = 1


def subset_words(hops: int = SUBSET_HOPS) -> list[str]:
    """:func:`embedded_vocabulary` and the words of their synonyms, ``hops`` times (full WordNet)."""
    words = set(embedded_vocabulary())
    frontier = set(words)
    for _ in range(hops):
        new = {w for word in frontier for syn in full_synonyms(word) for w in caption_words(syn)} - words
        words |= new
        frontier = new
    return sorted(words)


def build_subset(out: Path = SUBSET_PATH) -> int:
    """Write :data:`SUBSET_PATH` from full WordNet (NLTK): synonyms and parts of speech of
    :func:`subset_words`, so that the embedded default runs without WordNet (EDA on every
    embedded caption then looks up no word outside the subset)."""
    wn = nltk_wordnet()
    words = {w: {"synonyms": full_synonyms(w), "pos": full_pos(w)} for w in subset_words()}
    data = {"source": f"WordNet {wn.get_version()} via NLTK (EDA get_synonyms; parts of speech of all synsets)",
            "built_by": "python -m defenses.text_augment --build-subset", "hops": SUBSET_HOPS, "words": words}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=0, sort_keys=True, separators=(",", ":")) + "\n")
    return len(words)


# ---------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defenses.text_augment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup-wordnet", metavar="DIR", help="build DIR/corpora/wordnet for NLTK from Debian's WordNet")
    parser.add_argument("--source", default=str(SYSTEM_WORDNET), help="WordNet database folder (default %(default)s)")
    parser.add_argument("--eda", metavar="CAPTION", help="print a few EDA augmentations of CAPTION")
    parser.add_argument("--build-subset", action="store_true",
                        help=f"rebuild {SUBSET_PATH.name} from full WordNet (after --setup-wordnet, with NLTK_DATA set)")
    args = parser.parse_args(argv)
    if args.build_subset:
        print(f"wrote {build_subset()} words to {SUBSET_PATH}")
    if args.setup_wordnet:
        try:
            dest = setup_wordnet(args.setup_wordnet, args.source)
        except WordNetMissingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"WordNet for NLTK written to {dest}; set NLTK_DATA={Path(args.setup_wordnet).expanduser()}")
    if args.eda:
        aug = CaptionAugmenter(seed=0, mode="per_step")
        for _ in range(5):
            print(aug([args.eda])[0])
    if not (args.setup_wordnet or args.eda or args.build_subset):
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
