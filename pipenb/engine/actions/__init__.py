"""Actions: each module registers one family of actions and compiles them to engine steps;
``common`` (``when:`` guards and field paths as generated code) registers nothing.
``pipenb.lang.catalog`` names the module of each action."""
