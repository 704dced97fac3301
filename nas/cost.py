"""`python -m nas.cost`: see `nas.cli.cost` (the costing itself: `nas.arch.cost`).

`nas.cost` is also the public costing function, `nas.cost(genotype)`. Once this command
module is imported (say, by a tool that imports every module), the package attribute
`nas.cost` becomes this module; so the module forwards calls to the function, and
`nas.cost(genotype)` keeps working either way.
"""

import sys
import types

from nas.arch.cost import cost as _cost


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _cost(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    from nas.cli.common import run
    from nas.cli.cost import main

    run(main)
