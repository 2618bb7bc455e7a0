"""`siamcli cluster`: group images into identities without labels, on a k-nearest-neighbour graph.

Modules, one concept each:
    options     ClusterOptions, the methods (ClusterMethod), the checks that need no file
    source      what is clustered: a folder's images (embedded) or an index's stored vectors
    threshold   the similarity that joins two images: --threshold or the run's calibrated one
    graph       the k-NN graph from FAISS (exact up to 20,000 vectors, IVF past that): O(N·k) memory
    methods     the clusterings: connected components, Chinese Whispers, average linkage
    summary     clusters numbered largest first, each with its representative and cohesion
    score       --score: pairwise and BCubed precision / recall / F1, ARI, NMI against identity folders
    sheet       the contact sheet (the largest clusters, their most central images)
    links       --link-to: one folder of symbolic links per cluster
    clustering  the command's engine: cluster_images(ClusterOptions) → ClusterResult

Nothing here imports Typer or Rich; TensorFlow loads only when a folder is embedded.
"""
