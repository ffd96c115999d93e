"""In-house models (plain ``nn.Module``s). Third-party models (timm, transformers) are built straight from config."""
