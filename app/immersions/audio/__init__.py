"""Sound in and out: decoding, the procedural house corpus, the scalogram."""
