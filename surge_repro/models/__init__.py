"""Models. ``small`` holds the in-house ones (CNN5, TinyMLP); ``vision`` builds ResNet-18 for 64x64 inputs from
torchvision's and a ViT from timm; ``lm`` builds GPT-2 and a Qwen2-MoE (Mixtral-like with a shared expert) from
transformers' classes and configs. Nothing downloads weights: every model trains from scratch, as in the paper."""
