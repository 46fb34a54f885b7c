"""Object proposals: selective search (Uijlings et al. 2013)."""

from handgrad.vision.proposals.selective_search import selective_search
