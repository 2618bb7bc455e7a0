"""`siamcli dedupe`: the same photo found again, exact or near, grouped, one file kept per group.

Modules, one concept each:
    keys        one pass over the files: content hash (sha256), size, time, pixels, perceptual hash
    align       the crop check: one thumbnail aligned onto another (scale and shift per axis), then compared
    thresholds  the measured thresholds of "near" (docs/dedupe.md)
    pairs       which pairs are duplicates: multi-index hashing, FAISS nearest neighbours, the crop check
    groups      pairs into groups (connected components: union-find), the file each group keeps
    result      the options and the result (its JSON, imagededup's map)
    embedded    the folder through a model (--model, --against): keys, copies, embeddings
    against     --against INDEX: the folder checked against an indexed gallery (read only)
    moves       moving the others out (never deleting), the record, and undoing it
    find        a folder in, groups out: the perceptual method, --model, and --against

Imports neither Typer nor Rich: `from siamcli.dedupe.find import find_duplicates` works in a notebook.
"""
