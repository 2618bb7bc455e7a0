"""The gallery index: FAISS over unit-length embeddings, with the files that make it trustworthy.

    <index>/index.faiss     FAISS index (inner product = cosine on unit vectors); row i ↔ items row i
    <index>/items.csv       id,path,label — one row per indexed image, in FAISS row order
    <index>/hashes.csv      id,sha256 — the content hash of each image (what --append compares)
    <index>/embeddings.npy  (count, dim) float32, the exact vectors (rebuilds never re-embed)
    <index>/manifest.json   model fingerprint, dim, metric, factory, counts, recall, checksums…

Modules, one concept each:
    faiss_index  choosing the index type (the `auto` rule), building it, measuring recall@10
    vectors      streaming (count, dim) float32 .npy files in and out, chunk by chunk
    items        items.csv / hashes.csv rows and content hashing
    manifest     manifest.json: what the index was built from, and its file checksums
    store        loading and validating an index directory
    embedder     streaming images through the model (tf.data), vectors straight to disk
    build        `siamcli index`: full build, --append, --prune, --force, atomic swap
    shard        `--shard I/N` (one machine's share, embedded into a partial) and `--merge`
    lock         one writer per index at a time (flock beside the index directory)
    search       `siamcli query`: images in, ranked neighbours (dataclasses) out
    plot         each query beside its neighbours (matplotlib, Agg)

Nothing here imports Typer or Rich; FAISS and TensorFlow load only in the modules that use them.
"""
