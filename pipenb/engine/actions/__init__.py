"""Actions: each module registers one family of actions and compiles them to engine steps."""
