"""Readable topic names for the synthetic taxonomy (broad → specific).

Level-2 names are per level-1 topic; level-3 and level-4 names are facets shared across
branches (as real taxonomies reuse "tutorials" or "for beginners"), so a title word alone does
not pin a topic down.
"""

L1 = ("sports", "music", "cooking", "travel", "science", "gaming", "animals", "fashion")
L2 = {
    "sports": ("football", "swimming", "skiing", "tennis", "cycling", "boxing"),
    "music": ("guitar", "piano", "drums", "singing", "violin", "dj sets"),
    "cooking": ("baking", "noodles", "grilling", "desserts", "vegan food", "street food"),
    "travel": ("mountains", "beaches", "cities", "islands", "deserts", "road trips"),
    "science": ("space", "chemistry", "robots", "physics", "biology", "geology"),
    "gaming": ("racing games", "puzzle games", "strategy games", "platformers", "shooters", "rpgs"),
    "animals": ("cats", "dogs", "birds", "horses", "reptiles", "ocean life"),
    "fashion": ("sneakers", "streetwear", "vintage", "jewellery", "makeup", "hairstyles"),
}
L3 = ("tricks", "history", "gear", "challenges", "tutorials", "highlights")
L4 = ("for beginners", "pro level", "funny moments", "slow motion")
FILLER = ("amazing", "watch", "today", "my", "best", "wow", "day", "new", "video", "life",
          "vlog", "try", "ever", "this", "epic", "insane", "part", "real", "top", "quick")
