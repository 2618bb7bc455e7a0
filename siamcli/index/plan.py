"""Planning an index, without FAISS: the `auto` rule, factory strings and byte estimates.

Pure arithmetic on (index type, vectors, dimension), so `siamcli index --help`, summaries and
the cost estimates never import FAISS. Why each number is what it is (measured at 10^5…10^7
vectors): docs/scaling.md, "Galleries of millions".

    type    factory (N vectors of dimension d)          bytes a vector in index.faiss
    flat    Flat                                       4d (exact; brute force)
    hnsw    IDMap,HNSW32,Flat                          4d + 2·32·4 + 16 (graph search)
    ivf     IVF{L},Flat  (IVF{L},SQ8 past 8 GiB)        4d + 8  (d + 8)
    ivfpq   IVF{L}[_HNSW32],PQ{m}[x{b}],Refine(SQ8)    d + m + 8: PQ codes propose candidates,
                                                       8-bit vectors (row order, the store's only
                                                       copy) re-rank them
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from siamcli.choices import IndexType

INDEX_TYPES = IndexType.values()
FLAT_MAX = 50_000  # auto: exact search up to this many images
MEMORY_BUDGET = 8 << 30  # auto: HNSW (raw vectors + graph) up to this size, ivfpq past it
HNSW_M = 32  # graph degree: the usual speed/recall sweet spot for d in 64…512
MIN_POINTS_PER_LIST = 39  # FAISS warns below this
PQ_SUBVECTOR_DIM = 16  # ivfpq: one 8-bit PQ code per 16 dimensions (16 bytes at d = 256) …
PQ_FINE_FROM = 2_000_000  # … and per 8 dimensions from this many vectors on: at 10^7, PQ16 candidates reached
                          # recall@10 0.907 at the deepest setting, PQ32 0.956 (both measured, docs/scaling.md);
                          # auto picks ivfpq only past ≈ 6.6 M, so it always gets PQ32
REFINE_CODES = "SQ8"  # ivfpq: re-ranks from, and keeps for rebuilds, d bytes a vector (per-dimension 8-bit steps)
HNSW_QUANTIZER_MIN_LISTS = 4096  # ivfpq: an HNSW coarse quantizer from this many lists on (assigning
                                 # 10^7 vectors to 16,384 centroids by brute force takes ≈ 25 min on 2 cores)


@dataclass(frozen=True)
class IndexPlan:
    index_type: str  # flat | hnsw | ivf | ivfpq (never auto: auto resolves to one of them)
    factory: str  # FAISS index_factory string, as stored in the manifest
    chosen_by: str  # "auto" or "user"

    @property
    def approximate(self) -> bool:
        return self.index_type != "flat"

    @property
    def nlist(self) -> int:
        found = re.search(r"(?:^|,)IVF(\d+)", self.factory)
        return int(found.group(1)) if found else 0



def nlist_for(count: int) -> int:
    """Inverted lists for N vectors: the power of 2 nearest 4·√N, with ≥ 39 training points each."""
    if count < 2 * MIN_POINTS_PER_LIST:
        return 1
    power = 2 ** round(math.log2(4 * math.sqrt(count)))
    while power > 1 and power * MIN_POINTS_PER_LIST > count:
        power //= 2
    return max(1, power)


def pq_subquantizers(dim: int, count: int = 0) -> int:
    """PQ codes per vector: one per PQ_SUBVECTOR_DIM dimensions (half that from PQ_FINE_FROM
    vectors on), a divisor of dim (FAISS needs one)."""
    m = max(1, dim // (PQ_SUBVECTOR_DIM // 2 if count >= PQ_FINE_FROM else PQ_SUBVECTOR_DIM))
    while dim % m:
        m -= 1
    return m


def pq_bits(count: int) -> int:
    """Bits per PQ code: 8, or fewer for a gallery too small to train 256 centroids per codebook."""
    bits = 8
    while bits > 1 and count < (1 << bits) * MIN_POINTS_PER_LIST:
        bits -= 1
    return bits


def ivfpq_factory(count: int, dim: int) -> str:
    """IVF{L}[_HNSW32],PQ{M}[x{b}],Refine(SQ8): the lists of ivf, an HNSW quantizer from HNSW_QUANTIZER_MIN_LISTS."""
    nlist = nlist_for(count)
    quantizer = f"_HNSW{HNSW_M}" if nlist >= HNSW_QUANTIZER_MIN_LISTS else ""
    bits = pq_bits(count)
    codes = f"PQ{pq_subquantizers(dim, count)}" + (f"x{bits}" if bits != 8 else "")
    return f"IVF{nlist}{quantizer},{codes},Refine({REFINE_CODES})"


def ivfpq_bytes(count: int, dim: int) -> int:
    """index.faiss of ivfpq: 8-bit vectors (re-ranking, rebuilds) + PQ codes + the list's id."""
    return count * (dim + pq_subquantizers(dim, count) + 8)



# ivfpq's factory: IVF lists of PQ codes re-ranked from scalar-quantised vectors kept in row order (no IDMap)
_ROW_ORDERED_REFINE = re.compile(r"^IVF\d+[^,]*,PQ[^,]+,Refine\(SQ(?:8|6|4|fp16|bf16)\)$")


def keeps_vectors(plan_or_factory: IndexPlan | str) -> bool:
    """Whether the store must keep the vectors beside the index (embeddings.npy) for future rebuilds.

    False when the index itself holds every row's vector in row order, readable with
    `reconstruct_rows`: ivfpq's `...,Refine(SQ8)` (no IDMap: ids = rows). True for every
    other factory, the old `IDMap,...,RFlat` ivfpq included (its vectors are in insertion
    order, held-out rows last, not row order).
    """
    factory = plan_or_factory.factory if isinstance(plan_or_factory, IndexPlan) else str(plan_or_factory)
    return _ROW_ORDERED_REFINE.search(factory) is None


def hnsw_bytes(count: int, dim: int) -> int:
    """Approximate memory of HNSW{M},Flat: raw vectors, level-0 links (2·M ids), upper levels."""
    return count * (4 * dim + 2 * HNSW_M * 4 + 16)


FLAT = IndexPlan("flat", "Flat", "auto")


def check_index_type(index_type: str) -> None:
    """--index-type must be one of INDEX_TYPES, else UserError (the one check, used before any work starts)."""
    IndexType.check(index_type, "--index-type")



# The `auto` rule: the first type whose test the gallery passes (N vectors of dimension d).
AUTO_RULE = (
    ("flat", lambda count, dim: count <= FLAT_MAX),
    ("hnsw", lambda count, dim: hnsw_bytes(count, dim) <= MEMORY_BUDGET),
    ("ivfpq", lambda count, dim: True),
)


def ivf_factory(count: int, dim: int) -> str:
    """IVF{L},Flat, or IVF{L},SQ8 when the raw vectors would not fit MEMORY_BUDGET."""
    return f"IVF{nlist_for(count)},{'SQ8' if count * dim * 4 > MEMORY_BUDGET else 'Flat'}"


FACTORIES = {
    "flat": lambda count, dim: "Flat",
    "hnsw": lambda count, dim: f"IDMap,HNSW{HNSW_M},Flat",
    "ivf": ivf_factory,
    "ivfpq": ivfpq_factory,
}


def plan_index(index_type: str, count: int, dim: int) -> IndexPlan:
    """Resolve --index-type (auto|flat|hnsw|ivf|ivfpq) for a gallery of `count` vectors (AUTO_RULE)."""
    check_index_type(index_type)
    chosen_by = "user"
    if index_type == "auto":
        chosen_by = "auto"
        index_type = next(name for name, fits in AUTO_RULE if fits(count, dim))
    return IndexPlan(index_type, FACTORIES[index_type](count, dim), chosen_by)
