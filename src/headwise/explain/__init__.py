"""Explanations of attention, step by step (the pages they make are headwise.pages Reports).

example      the lectures' example: tokens, embeddings, the module, one traced run
lecture      the lectures' words: each step's axes and names, their code, their stages
answers      what a learner should see in a run, checked from the trace
walkthrough  the lectures' example as a Report: every traced step, labelled
playground   what the page's "your own numbers" section starts from
book/        Raschka's chapter 3, sections 3.3 to 3.6, every printed value by headwise
by_hand      the pencil-and-paper exercise, next to headwise's exact numbers (needs rich)
teaching     the sample exercise files, and which exercises are fit to work by hand
worksheet    the exercise as a printable HTML worksheet
terminal     the walkthrough in an 80-column terminal (needs rich)
"""
