"""Pretraining data: image sources (folders, manifests, tar shards), nested subsets, augmentation
(RandomResizedCrop + flip + ARES + one normalisation), the dataset, its collate and bad-image accounting.

Writing shards (`pack`) is roma.data.shards, a command line (`python -m roma.data.shards`): not imported
here, so that running it as __main__ does not import it twice."""
from .dataset import (BadImageError, BadImageTracker, BadSample, PretrainDataset, build_pretrain_dataset,
                      collate, load_rgb, sample_rng)
from .refs import IMAGE_EXTS, ImageRef, read_bytes
from .shard_reader import index_shards, iter_shard
from .sources import list_images
from .subsets import keys_checksum, read_manifest, subset_keys, subset_manifest
from .transforms import IMAGENET_MEAN, IMAGENET_STD, PretrainTransform, normalize

__all__ = ["BadImageError", "BadImageTracker", "BadSample", "PretrainDataset", "build_pretrain_dataset",
           "collate", "load_rgb", "sample_rng", "index_shards", "iter_shard", "IMAGE_EXTS",
           "ImageRef", "list_images", "read_bytes", "keys_checksum", "read_manifest", "subset_keys",
           "subset_manifest", "IMAGENET_MEAN", "IMAGENET_STD", "PretrainTransform", "normalize"]
