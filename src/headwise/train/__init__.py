"""Training: the loop of `headwise train`, its checkpoints, and the tasks it trains on.

options.py     TrainOptions: how to train, checked, saved in every checkpoint
loop.py        train(): AdamW, warmup and cosine decay, evaluation, the loss curve
checkpoint.py  atomic, exactly resumable checkpoints (safetensors weights and optimizer state, JSON)
tasks/         dates and shakespeare: data, vocabularies, evaluation
"""
