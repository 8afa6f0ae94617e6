"""Pretraining the demo's tiny ViLT on the embedded world: a program of its own.

FedDAT finetunes a foundation model; the demo's backbone must have seen the embedded world's
images and words first. ``corpus`` builds the pooled pretraining corpus, ``train`` runs ViLT's
objectives on it and saves the backbone in the transformers layout. It shares the data and model
code with federated training and nothing of its loop; ``launch.py`` starts it for a config of
``kind = "pretrain"`` (``configs/pretrain_tiny_vilt.py``).
"""
