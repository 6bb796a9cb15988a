"""Names of the files the stages write, shared by the library and the workflow rules.

Kept free of heavy imports (no torch) because the Snakefile reads it while parsing.
"""


def checkpoint_name(iteration):
    """File name of the checkpoint written at ``iteration``."""
    return f"ckpt_{iteration:07d}.pt"


def checkpoint_iterations(iterations, every):
    """Iterations at which a training stage writes checkpoints: every ``every`` and the last."""
    its = list(range(every, iterations + 1, every))
    if not its or its[-1] != iterations:
        its.append(iterations)
    return its
