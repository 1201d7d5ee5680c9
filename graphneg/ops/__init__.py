"""Small ops on the ground floor, beside :mod:`graphneg.graph`: the one kNN kernel and label helpers."""
from graphneg.ops.knn import chunked_topk, knn_index, nearest_neighbours
from graphneg.ops.labels import next_positive_index, rank_in_class

__all__ = ["chunked_topk", "knn_index", "nearest_neighbours", "next_positive_index", "rank_in_class"]
