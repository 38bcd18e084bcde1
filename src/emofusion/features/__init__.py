"""Embedding stage: backbone registry per modality, per-clip feature shards, the merged store and its reader.

Cheap to import: backbones import torch, transformers or opensmile only when they are built.
"""
