"""The layouts `mocokit import --format` reads, on their own so that its --help imports no torch."""

# moco-v1v2: facebookresearch/moco main_moco.py (`module.encoder_q.*`, `module.encoder_k.*`, `module.queue`);
# moco-v3: facebookresearch/moco-v3 (`module.base_encoder.*`, `module.momentum_encoder.*`, `module.predictor.*`);
# torchvision / timm: a backbone's own state dict (its classifier dropped); mocokit: a MoCo state dict as is;
# mmpretrain (mmselfsup), lightly, solo-learn: the MoCo checkpoints of those frameworks (layouts.py)
LAYOUTS = ("moco-v1v2", "moco-v3", "torchvision", "timm", "mocokit", "mmpretrain", "lightly", "solo-learn")
FORMATS = ("auto", *LAYOUTS)  # auto: the layout is recognised from the key names
