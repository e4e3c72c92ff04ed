"""A shopping list, a small Tk app: type an item, press Enter (or Add); Delete removes the
selected one. Every change is written to the JSON file named on the command line, which is
how the grader reads the app's state."""

import json
import sys
import tkinter as tk

STATE = sys.argv[1]


def save() -> None:
    with open(STATE, "w") as out:
        json.dump({"items": list(listbox.get(0, tk.END))}, out)


def add(_event: object = None) -> None:
    text = entry.get().strip()
    if text:
        listbox.insert(tk.END, text)
        entry.delete(0, tk.END)
        save()


def remove(_event: object = None) -> None:
    for index in reversed(listbox.curselection()):
        listbox.delete(index)
    save()


root = tk.Tk()
root.title("Shopping list")
root.geometry("480x360+40+40")
root.option_add("*Font", "TkDefaultFont 14")
tk.Label(root, text="Item:").place(x=16, y=16)
entry = tk.Entry(root, width=22)
entry.place(x=90, y=14)
entry.bind("<Return>", add)
tk.Button(root, text="Add", command=add).place(x=380, y=10)
listbox = tk.Listbox(root, width=38, height=9)
listbox.place(x=16, y=64)
listbox.bind("<Delete>", remove)
entry.focus_set()
save()
root.mainloop()
