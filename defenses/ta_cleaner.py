"""TA-Cleaner / CleanerCLIP (Xun et al., 2024): CleanCLIP plus counterfactual text.

"CleanerCLIP: Fine-grained Counterfactual Semantic Augmentation for Backdoor Defense in
Contrastive Learning" (arXiv 2409.17601). There is no public code; the method is known
from the abstract and reviews (benchmark/METHODS.md, ta_cleaner). Every choice below is documented and
switchable in :class:`TACleanerConfig`.

Objective: ``L = L_CleanCLIP + l3 * L_TA`` with CleanCLIP's terms, weights and schedule
(the embedded suite gives it CleanCLIP's val-chosen lambda2 and l3 = 0.25, chosen on the
val split among {1, 0.5, 0.25}; subset 0.15 and 3 negatives were not tuned). At the
embedded scale the counterfactual term did not help against BadNet/Blended: every l3
left a higher val ASR than CleanCLIP alone (numbers in ``benchmark/suites/embedded.yaml``);
the paper's gains are reported on stealthier attacks (BadCLIP).

- Re-sampling (``subset_fraction``, default 0.15 within the paper's "10-20%"): at the
  start of every epoch a fresh, seeded subset of the fine-tuning set's samples is drawn;
  the selected samples of each batch get sub-captions.
- Positive sub-caption: the caption with its modifiers (adjectives/adverbs in
  attributive position, i.e. before a noun or before another modifier) dropped, the
  nouns kept ("a photo of a worn sneaker." ->
  "a photo of a sneaker.").
- Negative sub-captions (``num_negatives``, default 3): the caption with exactly one
  content word (noun, verb or adjective) swapped for another word of the same part of
  speech from the *data vocabulary* (``vocabulary="data"``, the words of the fine-tuning
  captions). The subject noun is swapped first (``slot="noun_first"``; ``"uniform"``
  draws among all content slots). Replacements that would keep the caption true are
  excluded: WordNet synonyms of the word, words already in the caption and, when labels
  are known, words specific to the sample's own class and any noun used in its class's
  captions (another name of the class, e.g. "top" for a "tee").
- Parts of speech come from WordNet (the shipped subset for the embedded vocabulary,
  NLTK's full WordNet otherwise): a word WordNet knows as adjective/adverb directly
  before a word it knows as noun is a modifier (punctuation between them ends the noun
  phrase: in "white top, top left" the garment "top" is a noun); otherwise noun > verb > adjective.
  Content words are those with a document frequency <= ``max_df`` over the
  fine-tuning captions, or (with labels) concentrated in one class: template words
  ("photo", "background") are never swapped.
- Loss (NegCLIP-style, documented choice): for every selected image, an InfoNCE whose
  candidates are the batch's captions (its own replaced by its positive sub-caption,
  identical captions of other samples counted as positives too) plus its own negative
  sub-captions as extra hard negatives, with the shared learned scale.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import DefenseContext, LossOutput, Objective, StepContext, check
from defenses.cleanclip import CleanCLIP, CleanCLIPConfig, CleanCLIPObjective


@dataclass
class TACleanerConfig(CleanCLIPConfig):
    """CleanCLIP's settings plus the counterfactual-text term."""

    lambda3: float = 1.0
    subset_fraction: float = 0.15
    num_negatives: int = 3
    slot: Literal["noun_first", "uniform"] = "noun_first"
    vocabulary: Literal["data"] = "data"
    max_df: float = 0.05
    class_specific: float = 0.5  # a word is specific to a class when this share of its uses is there

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.lambda3 >= 0, "lambda3", self.lambda3, "use a non-negative weight")
        check(0 < self.subset_fraction <= 1, "subset_fraction", self.subset_fraction, "use a fraction in (0, 1], e.g. 0.15")
        check(self.num_negatives >= 1, "num_negatives", self.num_negatives, "use at least one negative sub-caption")
        check(0 < self.max_df <= 1, "max_df", self.max_df, "use a document frequency in (0, 1]")


class SubCaptioner:
    """Positive and negative sub-captions from a data vocabulary tagged with WordNet."""

    def __init__(self, captions: Sequence[str], labels: Sequence[int] | None, lexicon, max_df: float = 0.05,
                 class_specific: float = 0.5, slot: str = "noun_first"):
        from defenses.text_augment import STOP_WORDS, caption_words

        self.lexicon = lexicon
        self.slot = slot
        self._pos: dict[str, list[str]] = {}
        df: Counter[str] = Counter()
        by_class: dict[str, Counter[int]] = defaultdict(Counter)
        tags: dict[str, Counter[str]] = defaultdict(Counter)
        distinct = list(dict.fromkeys(captions))
        label_of: dict[str, Counter[int]] = {}
        self.class_words: dict[int, set[str]] = defaultdict(set)  # every word used in a class's captions
        if labels is not None:
            for c, y in zip(captions, labels):
                label_of.setdefault(c, Counter())[int(y)] += 1
        for caption in distinct:
            words = caption_words(caption)
            for w in set(words):
                df[w] += 1
                for y, k in label_of.get(caption, {}).items():
                    if y >= 0:
                        by_class[w][y] += k
                        self.class_words[y].add(w)
            for w, t in zip(words, self.tag(caption)):
                if t:
                    tags[w][t] += 1
        n = max(1, len(distinct))
        self.owner: dict[str, int] = {}  # word -> the class it is specific to
        for w, counts in by_class.items():
            y, k = counts.most_common(1)[0]
            if k >= class_specific * sum(counts.values()):
                self.owner[w] = y
        self.content = {w for w in df if w not in STOP_WORDS and (df[w] / n <= max_df or w in self.owner)}
        self.by_pos: dict[str, list[str]] = defaultdict(list)
        for w in sorted(self.content):
            if tags[w]:
                self.by_pos[tags[w].most_common(1)[0][0]].append(w)

    def pos(self, word: str) -> list[str]:
        if word not in self._pos:
            self._pos[word] = self.lexicon.pos(word)
        return self._pos[word]

    def tag(self, caption: str) -> list[str | None]:
        """Part of speech of each word of ``caption`` in context (None: stop word/unknown)."""
        from defenses.text_augment import STOP_WORDS, split_word

        parts = [split_word(t) for t in caption.split()]
        words = [w.lower() for _, w, _ in parts if w]
        ends = [bool(post) for _, w, post in parts if w]  # "white top, big.": a comma ends the noun phrase
        out: list[str | None] = [None] * len(words)
        for i in range(len(words) - 1, -1, -1):  # right to left: modifiers chain before a noun
            w = words[i]
            tags = self.pos(w) if w not in STOP_WORDS else []
            nxt = words[i + 1] if i + 1 < len(words) and not ends[i] else None
            before_noun = nxt is not None and nxt not in STOP_WORDS and ("noun" in self.pos(nxt) or out[i + 1] in ("adj", "adv"))
            if ("adj" in tags or "adv" in tags) and before_noun:
                out[i] = "adj" if "adj" in tags else "adv"
            else:
                out[i] = next((t for t in ("noun", "verb", "adj", "adv") if t in tags), None)
        return out

    def positive(self, caption: str) -> str:
        """Drop modifiers (adjectives/adverbs before a noun); keep everything else."""
        from defenses.text_augment import split_word

        tokens = caption.split()
        words = [split_word(t)[1] for t in tokens]
        tags = iter(self.tag(caption))
        keep = []
        for tok, w in zip(tokens, words):
            t = next(tags) if w else None
            if not (w and t in ("adj", "adv")):
                keep.append(tok)
        out = " ".join(keep)
        post = split_word(tokens[-1])[2] if tokens else ""
        if post and not out.endswith(post):
            out += post
        return out

    def negatives(self, caption: str, label: int, k: int, rng: np.random.Generator) -> list[str]:
        """Up to ``k`` distinct captions differing from ``caption`` in exactly one content word."""
        from defenses.text_augment import split_word

        tokens = caption.split()
        words = [split_word(t)[1].lower() for t in tokens]
        tag_iter = iter(self.tag(caption))
        slots: list[tuple[int, str, str]] = []
        for i, w in enumerate(words):
            if not w:
                continue
            t = next(tag_iter)
            if t in ("noun", "verb", "adj") and w in self.content:
                slots.append((i, w, t))
        if self.slot == "noun_first" and any(t == "noun" for _, _, t in slots):
            nouns = [s for s in slots if s[2] == "noun"]
            owned = [s for s in nouns if s[1] in self.owner]  # the subject (class) noun, when labels say which
            slots = owned or nouns
        present = set(words)
        out: list[str] = []
        order = list(rng.permutation(len(slots)))
        for attempt in range(4 * k):
            if not slots or len(out) >= k:
                break
            i, w, t = slots[int(order[attempt % len(order)])]
            syn = set(self.lexicon.synonyms(w))
            options = [c for c in self.by_pos.get(t, []) if c != w and c not in present and c not in syn
                       and not (label >= 0 and (self.owner.get(c) == label or (t == "noun" and c in self.class_words[label])))]
            if not options:
                continue
            pre, _, post = split_word(tokens[i])
            new = list(tokens)
            new[i] = pre + options[int(rng.integers(len(options)))] + post
            cand = " ".join(new)
            if cand not in out:
                out.append(cand)
        return out


class TACleanerObjective(CleanCLIPObjective):
    """CleanCLIP + ``l3`` * image-anchored InfoNCE over sub-captions with hard negatives."""

    def __init__(self, config: TACleanerConfig, seed: int, captions: Sequence[str], labels: Sequence[int] | None,
                 num_samples: int):
        super().__init__(config, seed)
        self.config = config
        self.seed = seed
        self.num_samples = num_samples
        self.sub = SubCaptioner(captions, labels, self.text_augmenter.lexicon, config.max_df, config.class_specific,
                                config.slot)
        self.selected = torch.zeros(num_samples, dtype=torch.bool)
        self._cache: dict[tuple[str, int, int], tuple[str, list[str]]] = {}

    def on_epoch_start(self, model, epoch: int, ctx: StepContext) -> None:
        rng = np.random.default_rng([self.seed, 0x7AC, epoch])
        count = max(1, round(self.config.subset_fraction * self.num_samples))
        self.selected = torch.zeros(self.num_samples, dtype=torch.bool)
        self.selected[torch.as_tensor(rng.choice(self.num_samples, size=count, replace=False))] = True
        self.epoch = epoch

    def texts(self, dataset, epoch: int) -> list[str]:
        """CleanCLIP's EDA rewrites, plus the sub-captions and counterfactuals of this epoch's
        selected samples (the selection is drawn in :meth:`on_epoch_start`)."""
        out = list(super().texts(dataset, epoch))
        captions, labels = getattr(dataset, "captions", None), getattr(dataset, "labels", None)
        if not isinstance(captions, list) or labels is None or len(captions) != self.num_samples:
            return out
        for i in self.selected.nonzero().flatten().tolist():
            pos, negs = self.subcaptions(captions[i], int(labels[i]), i, epoch)
            if negs:  # ta_loss encodes a sample's texts only when it has negatives
                out.append(pos)
                out.extend(negs)
        return out

    def subcaptions(self, caption: str, label: int, index: int, epoch: int) -> tuple[str, list[str]]:
        key = (caption, index, epoch)
        if key not in self._cache:
            rng = np.random.default_rng([self.seed, 0x7AC, index, epoch])
            self._cache[key] = (self.sub.positive(caption), self.sub.negatives(caption, label, self.config.num_negatives, rng))
        return self._cache[key]

    def ta_loss(self, model, batch, e: dict, scale: torch.Tensor,
                ctx: StepContext | None = None) -> tuple[torch.Tensor | None, int]:
        """The counterfactual term over the *global* batch, and its number of anchor rows.

        Each process builds the sub-captions of its own selected samples and anchors them at
        its own rows of the gathered image features (``e["offset"]`` onwards); the candidates
        are the captions of the whole global batch. The per-row losses are summed, the sums
        and counts gathered, so every rank returns the same global mean (the value one
        process computes for the same global batch).
        """
        idx = batch.index.cpu()
        sel = self.selected[idx.clamp(max=self.num_samples - 1)].nonzero().flatten().tolist()
        epoch = getattr(self, "epoch", 1)
        rows, pos_caps, neg_caps, neg_owner = [], [], [], []
        for r in sel:
            pos, negs = self.subcaptions(batch.captions[r], int(batch.labels[r]), int(idx[r]), epoch)
            if not negs:
                continue
            rows.append(r)
            pos_caps.append(pos)
            neg_caps.extend(negs)
            neg_owner.extend([len(rows) - 1] * len(negs))
        img, txt, caps = e["img"], e["txt"], e["captions"]  # the global batch (one process: the batch)
        offset = int(e.get("offset", 0))
        gather = ctx.all_gather if ctx is not None else (lambda x: x)
        counts = gather(torch.tensor([float(len(rows))], dtype=torch.float32, device=img.device))
        total_rows = int(round(float(counts.sum())))
        if total_rows == 0:  # the same decision on every rank: the counts are global
            return None, 0
        if rows:
            n = img.shape[0]
            emb = model.encode_text(pos_caps + neg_caps)
            pos_emb, neg_emb = emb[: len(rows)], emb[len(rows):]
            rows_t = torch.tensor(rows, device=img.device) + offset  # this rank's rows of the gathered features
            anchors = img[rows_t]  # (m, d)
            batch_logits = anchors @ txt.T  # (m, n)
            pos_logit = (anchors * pos_emb).sum(-1)  # (m,)
            batch_logits = batch_logits.scatter(1, rows_t[:, None], pos_logit[:, None])
            owner = torch.tensor(neg_owner, device=img.device)
            # each row sees only its own negatives: the others' are masked out
            mask = torch.zeros(len(rows), len(neg_caps), dtype=torch.bool, device=img.device)
            mask[owner, torch.arange(len(neg_caps), device=img.device)] = True
            neg_logits = (anchors @ neg_emb.T).masked_fill(~mask, -1e4)
            logits = scale * torch.cat([batch_logits, neg_logits], dim=1)
            target = torch.zeros(len(rows), n + len(neg_caps), dtype=logits.dtype, device=img.device)
            for i, r in enumerate(rows):
                for j in range(n):
                    if caps[j] == caps[offset + r]:
                        target[i, j] = 1.0
            target = target / target.sum(1, keepdim=True)
            local_sum = F.cross_entropy(logits, target, reduction="sum")
        else:  # no anchor here: a zero still tied to the graph, so that every rank joins the gathers' backward
            local_sum = img.sum() * 0.0
        loss = gather(local_sum.reshape(1)).sum() / total_rows
        return loss, total_rows

    def __call__(self, model, batch, ctx: StepContext) -> LossOutput:
        e = self.embed(model, batch, ctx)
        loss, parts = self.cleanclip_loss(model, e)
        ta, m = self.ta_loss(model, batch, e, model.logit_scale.exp(), ctx)
        if ta is not None:
            loss = loss + self.config.lambda3 * ta
            parts["ta"] = float(ta.detach())
        parts["ta_selected"] = float(m)
        return LossOutput(loss, parts)


class TACleaner(CleanCLIP):
    """CleanCLIP plus counterfactual sub-caption alignment (Xun et al. 2024)."""

    name = "ta_cleaner"
    paper = "Xun et al., CleanerCLIP / TA-Cleaner, arXiv 2409.17601 (2024)"
    Config = TACleanerConfig

    def objective(self, ctx: DefenseContext) -> Objective:
        data = ctx.clean_data
        if data is None:
            raise ValueError("ta_cleaner needs the clean fine-tuning set to build its vocabulary")
        labels = data.labels.tolist() if data.labels is not None else None
        return TACleanerObjective(self.config, self.seed, data.captions, labels, len(data))
