// Catch2's main, compiled once into a library (it takes ~15 s to compile).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
