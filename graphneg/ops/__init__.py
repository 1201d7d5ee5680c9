"""Small ops on the ground floor, beside :mod:`graphneg.graph`: the one kNN kernel, label helpers and
counter-based random draws."""
from graphneg.ops.knn import chunked_topk, knn_index, nearest_neighbours
from graphneg.ops.labels import next_positive_index, rank_in_class
from graphneg.ops.random import counter_uniform, draw_seed

__all__ = ["chunked_topk", "knn_index", "nearest_neighbours", "next_positive_index", "rank_in_class",
           "counter_uniform", "draw_seed"]
