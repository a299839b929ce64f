"""The word lists of the synthetic shop: names, places, brands, categories, user agents.

All of it is fake and small; the generator draws from these lists with a seeded NumPy RNG.
"""

from __future__ import annotations

import numpy as np

FIRST_NAMES = np.array(
    [
        "Aoife",
        "Ben",
        "Chloe",
        "Daniel",
        "Emma",
        "Finn",
        "Grace",
        "Hugo",
        "Isla",
        "Jack",
        "Katie",
        "Liam",
        "Maya",
        "Noah",
        "Olivia",
        "Patrick",
        "Quinn",
        "Ruby",
        "Sean",
        "Tara",
        "Ulla",
        "Victor",
        "Wendy",
        "Xavier",
        "Yasmin",
        "Zoe",
        "Marta",
        "Pavel",
        "Ines",
        "Tomas",
    ]
)
LAST_NAMES = np.array(
    [
        "Murphy",
        "Kelly",
        "Byrne",
        "Ryan",
        "Walsh",
        "Smith",
        "Novak",
        "Garcia",
        "Rossi",
        "Muller",
        "Dubois",
        "Jansen",
        "Silva",
        "Kowalski",
        "Nielsen",
        "Moreau",
        "Fischer",
        "Costa",
        "Horvat",
        "Larsen",
        "Brennan",
        "Doyle",
        "Quinn",
        "Keane",
        "Lynch",
    ]
)
CITIES = np.array(["Dublin", "Cork", "Galway", "Berlin", "Madrid", "Lisbon", "Paris", "Warsaw"])
COUNTRIES = np.array(["IE", "IE", "IE", "DE", "ES", "PT", "FR", "PL"])
STREETS = np.array(["Main Street", "High Road", "Church Lane", "Harbour View", "Station Road"])
BRANDS = [
    "Nordwave",
    "Lumora",
    "Arcfield",
    "Brightleaf",
    "Cobalt",
    "Dunmore",
    "Everkind",
    "Fjordic",
    "Glenmark",
    "Hollis",
    "Ivory",
    "Juniper",
    "Kestrel",
    "Larkspur",
    "Meridian",
    "Northgate",
    "Oakridge",
    "Pelham",
    "Quayside",
    "Rowan",
    "Solace",
    "Tidewell",
    "Umbra",
    "Valen",
    "Westcott",
    "Yarrow",
    "Zephyr",
    "Alder",
    "Bramble",
    "Cedarly",
]
CATEGORIES = {
    "Audio": ["Headphones", "Speakers", "Earbuds"],
    "Computing": ["Laptops", "Keyboards", "Monitors"],
    "Home": ["Lamps", "Cookware", "Bedding"],
    "Outdoor": ["Tents", "Backpacks", "Jackets"],
    "Sports": ["Running Shoes", "Yoga Mats", "Bicycles"],
}
ADJECTIVES = np.array(
    [
        "Wireless",
        "Compact",
        "Ultralight",
        "Classic",
        "Premium",
        "Everyday",
        "Pro",
        "Eco",
        "Smart",
        "Portable",
        "Deluxe",
        "Rugged",
    ]
)
USER_AGENTS = np.array(
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/130.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148",
        "Mozilla/5.0 (Linux; Android 15) Chrome/130.0 Mobile",
        "ShopApp/4.2 (iOS 18.0)",
    ]
)
EVENT_TYPES = np.array(["view", "search", "add_to_cart", "checkout", "login"])
EVENT_WEIGHTS = np.array([0.70, 0.10, 0.12, 0.05, 0.03])
