"""The autodiff engine: tensors, the op base class, grad mode, randomness, the array-module door."""
