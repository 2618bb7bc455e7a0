"""The gallery index: FAISS over unit-length embeddings, in immutable segments, with the files
that make it trustworthy.

    <index>/manifest.json      model fingerprint, dim, the segments, the tombstones, counts,
                               recall, checksums — replaced in one rename by every update
    <index>/index.faiss        the base segment (the folder itself): FAISS index, row i ↔ items row i
    <index>/items.sqlite       id, path, label, sha256, size, mtime per row (k rows read per query)
    <index>/embeddings.npy     (rows, dim) float32 vectors for rewrites (ivfpq: kept inside index.faiss)
    <index>/segments/NNNNNN/   a later segment: the same three files, written by one update
    <index>/deleted-GGGGGG.npy (segment, row) pairs removed since (tombstones)
    <index>/items.csv          id,path,label for people (full builds, --export-items)

Modules, one concept each:
    plan         which index: the `auto` rule, factory strings, byte estimates (no FAISS import)
    faiss_index  building a FAISS index from a vectors file (create, add rows, tune)
    recall       recall@10 on held-out vectors against exact search; tuning the search setting
    faiss_io     index.faiss read (or mapped) and written; a segment's search parameters applied
    vectors      streaming (count, dim) float32 .npy files in and out, chunk by chunk
    items        items.sqlite rows (and the items.csv export), content hashing
    manifest     manifest.json: IndexManifest, SegmentRecord, PartManifest; their one reader and one writer
    segment      one segment: its FAISS index, items and vectors; searching it past tombstones
    store        loading and validating an index (all segments); merged search; k-row lookups
    changes      what an update adds and removes (path, size, time; content hash if they differ)
    result       IndexResult: what a command did, for the summary
    update       an update in place: a new segment, tombstones, one manifest rename, tidying
    build        `siamcli index`: full build, --append, --prune, --force, choosing update or rewrite
    compact      `--compact` (rewrite as one segment, no embedding) and `--export-items`
    embedder     streaming images through the model (tf.data), vectors straight to disk
    shard        `--shard I/N` (one machine's share, embedded into a partial) and `--merge`
    lock         one writer per index at a time (flock beside the index directory, its file deleted when done)
    hints        the commands that messages suggest, with every option that selects the index
    locate       where a run's index is (<run>/index, the partials' folders), which model an index goes with
    search       `siamcli query`: images in, ranked neighbours (dataclasses) out
    plot         each query beside its neighbours (matplotlib, Agg)

Nothing here imports Typer or Rich; FAISS and TensorFlow load only in the modules that use them.
"""
