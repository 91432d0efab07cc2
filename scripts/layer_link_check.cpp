// The program each layer's library is linked whole into, with only the layers below it
// (meson.build): it links only when the layer calls nothing above itself.
int main() {
  return 0;
}
