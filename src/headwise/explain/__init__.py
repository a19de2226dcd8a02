"""Explanations of attention, step by step (the pages they make are headwise.pages Reports).

example      the lectures' example: tokens, embeddings, the module, one traced run
lecture      the lectures' words: each step's axes and names, their code, their stages
answers      what a learner should see in a run, checked from the trace
steps        a traced step as a WalkStep: labelled matrices, the lectures' names, its stage and checks
walkthrough  the lectures' example as a Report: every step in the lectures' order
playground   what the page's "your own numbers" section starts from
book/        Raschka's chapter 3, sections 3.3 to 3.6, every printed value by headwise
exercise     the pencil-and-paper exercise and its JSON or CSV file
hand_work    one head of it worked by hand (integers, fractions) and exactly by headwise
hand_steps   the steps it teaches, the hand-made numbers beside the exact ones, with checks
by_hand      those steps in the terminal (needs rich) and as a Report
teaching     the sample exercise files, and which exercises are fit to work by hand
worksheet    the exercise as a printable HTML worksheet
terminal     the walkthrough in an 80-column terminal (needs rich)
"""
