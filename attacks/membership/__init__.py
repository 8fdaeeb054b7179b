"""Membership-inference attacks (LOSS, reference, LiRA, RMIA) and empirical epsilon."""
