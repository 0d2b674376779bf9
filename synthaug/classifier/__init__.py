"""The downstream classifier harness: networks, classical augmentation, training with selection on val, metrics
and features. evaluate trains its arms with it; the reference's feature classifier is one of them."""
