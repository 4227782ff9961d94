"""Known defects that scenarios catch, each an expected failure until its fix is merged.

Every mark is ``strict``: once the fix lands, the scenario passes, the strict mark turns that
pass into a failure, and the mark must be removed (here and where it is used). The reason names
the defect and the behaviour the scenario requires. None is open now.
"""
