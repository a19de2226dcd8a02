"""Explanations of attention, step by step.

example    the lectures' example: tokens, embeddings, the module, one traced run
checks     what a learner should see in a run, checked from the trace
terminal   the walkthrough in an 80-column terminal (needs rich)
by_hand    the pencil-and-paper exercise, next to headwise's exact numbers (needs rich)
"""
