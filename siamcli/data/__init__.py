"""Finding images on disk, decoding them, splitting identities, and tf.data pipelines."""
