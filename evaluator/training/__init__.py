"""Fine-tuning: LoRA, textual inversion and full training of a base checkpoint.

The stage is split so each part reads at once: ``config`` (one TrainingConfig whose comments
say why each default is what it is), ``dataset`` / ``split`` / ``buckets`` (what is trained on,
held out and how it is batched), ``models`` (the base loaded, and the parts each method
trains), ``objective`` (the denoising loss shared by training and validation), ``loop`` (the
faithful training loop, DDP-aware), ``formats`` (the file formats other tools read: diffusers,
kohya/A1111), ``state`` (resume), ``steps`` (what happens at each saved step: records,
checkpoints, validation images) and ``validation`` (the step's figures, ``choose_step``).
"""
