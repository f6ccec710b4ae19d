"""One module per tab (and one for the project bar), each with `render()` and `listen()`.

`render(studio)` builds the components and returns them; `listen(studio, ui, project)` wires their
events. Keeping the two apart lets ui.py lay out every tab before any event refers across tabs.
"""
