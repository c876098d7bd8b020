"""k-shot image classification with a Vision Transformer: UCDvision/NOLA's ``vit/`` protocol.

``folder`` reads ImageFolder layouts and draws the k-shot sets, ``transforms`` turns images into
tensors, ``model`` builds the ViT (timm's, or a tiny one of timm's layout) and puts the adapter on
it, ``train`` is the loop behind ``src/vit_ft.py``.
"""
