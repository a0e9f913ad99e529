"""The project's scoring classifier: the CNN, its scores of generated digits, and its training (train.py)."""
from .model import DEFAULT_PATH, KIND, ClassifierConfig, MnistClassifier, build, figures, get_scorer, load
