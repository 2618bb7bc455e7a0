"""`siamcli serve`: the HTTP search service and its web page.

    config.py    ServeOptions: every knob, validated before TensorFlow is imported
    state.py     the model and the current index snapshot; hot swap when the index directory changes
    images.py    uploads → model-ready pixels (the CLI's decoder); gallery thumbnails
    batcher.py   the micro-batching queue: concurrent requests share one forward pass
    searcher.py  what one batch does: one embed() call, one FAISS search per distinct k
    metrics.py   Prometheus counters and histograms
    security.py  bearer token, upload size limit, response headers, exposure warning
    api.py       the /api/v1 routes
    app.py       the FastAPI application: routes, middleware, page, health, lifespan
    server.py    load everything, run uvicorn, shut down gracefully on SIGTERM
    static/      the page: plain HTML, CSS and JS, no build step and no CDN

Only the CLI imports this package; it imports index/, models/ and data/.
"""
