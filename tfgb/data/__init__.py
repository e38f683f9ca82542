"""Data layer: readers, vocabularies, synthetic generator, splits, candidate lists, graphs, tf.data."""
