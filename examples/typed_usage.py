"""A typed use of quantlib's public API: CI checks it with ``mypy --strict``.

Run it as a script too: ``python examples/typed_usage.py``.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import numpy.typing as npt

import quantlib


def main() -> None:
    rng = np.random.default_rng(0)
    emb: npt.NDArray[np.float32] = rng.standard_normal((2_000, 128)).astype(np.float32)
    codes = quantlib.quantize_embeddings(emb, "ubinary")       # an ndarray, not a list, for array input
    per_doc = quantlib.quantize_embeddings([emb[:10], emb[10:30]], "ubinary")  # a list for a list
    print(codes.shape, codes.dtype, len(per_doc), per_doc[0].shape)

    dist, ids = quantlib.search(codes[:3], codes, 5, precision="ubinary")
    print(dist.shape, ids.dtype)

    index = quantlib.Index(128, "int8", ranges=quantlib.calibration_ranges(emb))
    index.add(emb)
    sims, hits = index.search(emb[:2], 3, similarity=True)
    print(sims.dtype, hits.tolist())

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.qlx")
        index.save(path)
        loaded = quantlib.load_index(path)                      # Index | RescorePipeline
        if isinstance(loaded, quantlib.Index):
            print(len(loaded), loaded.precision)
        pipe = quantlib.RescorePipeline.build(emb, os.path.join(tmp, "p.qlx"))
        scores, top = pipe.search(emb[:2], k=4)
        print(scores.shape, top.shape)

    result = quantlib.semantic_search(emb[:2], codes, corpus_precision="ubinary", top_k=3)
    hits_per_query = result[0]
    print(hits_per_query[0][0]["corpus_id"], result[1] >= 0.0)
    quantlib.set_num_threads(1)
    print(quantlib.get_num_threads())


if __name__ == "__main__":
    main()
