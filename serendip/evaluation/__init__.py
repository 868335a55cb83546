"""Evaluation beyond offline accuracy: the ground-truth oracle of the synthetic platform,
beyond-accuracy metrics, and the online simulation that compares recommenders."""
