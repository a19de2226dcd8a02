"""Training: the loop of `headwise train`, its checkpoints, and the tasks it trains on.

options.py     TrainOptions: how to train, checked, saved in every checkpoint
loop.py        train(): AdamW, warmup and cosine decay, evaluation, Ctrl-C, the ranks
display.py     what a run shows: a line per evaluation, the progress bar, the loss curve PNG
checkpoint.py  atomic, exactly resumable checkpoints (safetensors weights and optimizer state, JSON):
               checkpoint_json.py (the document and its checks), checkpoint_tensors.py (the tensor files)
tasks/         dates and shakespeare: data, vocabularies, evaluation
"""
