"""Training the artificial ear: corpora, the CPC trainer, the linear probe."""
