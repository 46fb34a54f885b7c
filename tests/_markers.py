"""Skip markers shared by the test files, for data that only ``bash setup.sh`` installs."""

import pytest


def have_fashion_mnist() -> bool:
    try:
        from handgrad.data import FashionMNIST

        FashionMNIST(train=False)
        return True
    except FileNotFoundError:
        return False


needs_fashion_mnist = pytest.mark.skipif(
    not have_fashion_mnist(), reason="Fashion-MNIST is not installed (bash setup.sh installs it)"
)
