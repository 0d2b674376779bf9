"""The downstream classifier harness: networks, classical augmentation, training with selection on val (with
class-balanced batches, logit adjustment or class weights for long-tailed data), metrics and features.
evaluate trains its arms with it; the reference's feature classifier is one of them."""
