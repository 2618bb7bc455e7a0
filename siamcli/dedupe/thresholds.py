"""The measured thresholds that decide "near duplicate" (docs/dedupe.md has the tables).

Chosen for the best F1 of duplicate pairs on folders whose other photos are hard negatives —
other photos of the same person (ORL faces), of the same scene (one layout, another texture) —
built by `benchmarks/bench_dedupe.py --calibrate` from people and scenes the benchmark's
own folders do not start from. The identity threshold of a run would call those duplicates.
Imports nothing, so the CLI's help can quote them without loading numpy.
"""

HASH_RADIUS = 14  # dhash16 Hamming distance, of 256 bits: F1 rises to 14 with precision 1.000, falls past it
ALIGNED_MIN = 0.975  # the crop check's aligned similarity: the best F1 (0.993 on the calibration folder)
LAYOUT_MIN = 0.8  # cosine of the 8 × 8 layouts below which a pair is not crop-checked: no true pair lost (calibration)
EMBEDDING_MIN = 0.995  # cosine similarity of a run's embeddings (ORL model on unseen people): the best F1 (0.744)
