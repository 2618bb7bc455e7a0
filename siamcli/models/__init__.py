"""The embedding network (ResNet50 backbone + head) and the triplet loss."""
