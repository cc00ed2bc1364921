"""Offline side: MNIST tensors, augmentation, training, evaluation, model comparison."""
