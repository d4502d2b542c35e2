"""Composed question phrasings: every frame expands fully, lead-ins join cleanly, and sampling
gives each frame its share however many slots it has."""

from __future__ import annotations

from collections import Counter

import numpy as np

from wafersage.annotation import question_grammar as g


def test_frames_expand_every_slot_and_lead_ins_join_cleanly():
    qs = g.phrasings("type")
    assert not any("{" in q or "  " in q for q in qs)
    assert "Which failure signature does this bin map show?" in qs
    assert "Looking at the bin map, classify the defect class of this wafer." in qs
    assert "Quick question: Could you name the failure mode of this map?" in qs
    n_bare = sum(len(g._fill(f)) for f in g.FRAMES["type"])
    assert len(qs) == n_bare * len(g.LEADS)  # every slot choice times every lead-in, no duplicate
    assert g.phrasings("claim") == []  # claims keep their written phrasings only


def test_sampling_gives_each_frame_its_share_not_each_phrasing():
    frames = g.frame_phrasings("type_step")
    sizes = [len(qs) for qs in frames]
    assert max(sizes) > 20 * min(sizes)  # uniform over phrasings would all but drop the small frame
    owner = {q: i for i, qs in enumerate(frames) for q in qs}
    rng = np.random.default_rng(0)
    got = Counter(owner[g.sample(rng, "type_step")] for _ in range(3000))
    assert all(abs(got[i] / 3000 - 1 / len(frames)) < 0.04 for i in range(len(frames))), got
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert [g.sample(a, "zone") for _ in range(5)] == [g.sample(b, "zone") for _ in range(5)]  # seeded
