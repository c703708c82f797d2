// flux: a pruned surrogate exported by lumos_fx, run as a simulation code's Compute_Flux()
// would call it: one batch of faces in, one batch of fluxes out, no Python.
//
//   flux [--repeat N] model_aoti.pt2 faces.bin fluxes.bin
//
// Tensor files: int64 ndim, ndim int64 sizes, then the float32 entries, row-major, all
// little-endian, so numpy reads and writes them in a few lines (see README.md). A batch of
// faces is (faces, features); an image model's batch is (images, channels, height, width).

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

// The files are raw memory dumps; a big-endian host would need byte swapping.
static_assert(std::endian::native == std::endian::little, "flux reads little-endian files as raw memory");

namespace {

// A problem with the user's files or arguments: reported in one line, not as a crash.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

at::Tensor read_tensor(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Failure("cannot open " + path);
  const int64_t size = in.tellg();
  in.seekg(0);
  int64_t ndim = 0;
  if (!in.read(reinterpret_cast<char*>(&ndim), sizeof ndim) || ndim < 1 || ndim > 8)
    throw Failure(path + ": the header must start with the number of dims (int64, 1 to 8)");
  std::vector<int64_t> shape(ndim);
  if (!in.read(reinterpret_cast<char*>(shape.data()), ndim * int64_t(sizeof(int64_t))))
    throw Failure(path + ": too short for the header (int64 ndim, then ndim int64 sizes)");
  const int64_t payload = size - (ndim + 1) * int64_t(sizeof(int64_t));
  // Bound the product by division at each step, so a garbage header cannot overflow it.
  int64_t numel = 1;
  std::string dims;
  for (const int64_t d : shape) {
    dims += (dims.empty() ? "" : " x ") + std::to_string(d);
    if (d < 0 || (d > 0 && numel > payload / 4 / d)) numel = -1;
    if (numel >= 0) numel *= d;
  }
  if (numel < 0 || numel * 4 != payload)
    throw Failure(path + ": header says " + dims + " float32 but " + std::to_string(payload) + " bytes follow it");
  at::Tensor tensor = at::empty(shape, at::kFloat);
  in.read(reinterpret_cast<char*>(tensor.data_ptr<float>()), payload);
  if (!in) throw Failure("cannot read " + path);
  return tensor;
}

void write_tensor(const std::string& path, const at::Tensor& output) {
  const at::Tensor tensor = output.to(at::kFloat).contiguous();
  std::vector<int64_t> header{tensor.dim()};
  header.insert(header.end(), tensor.sizes().begin(), tensor.sizes().end());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), header.size() * sizeof(int64_t));
  out.write(reinterpret_cast<const char*>(tensor.const_data_ptr<float>()), tensor.numel() * 4);
  if (!out) throw Failure("cannot write " + path);
}

int run(const std::string& package, const std::string& faces_path, const std::string& fluxes_path,
        long repeat) {
  // Read the faces first: a bad file is reported before the slower package load.
  std::vector<at::Tensor> faces{read_tensor(faces_path)};
  // The loader's own message for a missing package is about zip internals.
  if (!std::ifstream(package)) throw Failure("cannot open " + package);
  // Without its input checks a package reads a batch of the wrong width past its end, silently.
  // They cost ~0.3 us a call (measured on a small MLP); AOTI_RUNTIME_CHECK_INPUTS=0 still turns them off.
  setenv("AOTI_RUNTIME_CHECK_INPUTS", "1", /*overwrite=*/0);
  torch::inductor::AOTIModelPackageLoader loader(package);

  // The first call also pays one-off costs (thread pool start-up, page faults), so it is not timed.
  std::vector<at::Tensor> fluxes = loader.run(faces);
  if (fluxes.size() != 1)
    throw Failure(package + ": the model returns " + std::to_string(fluxes.size()) + " tensors, flux expects one");
  write_tensor(fluxes_path, fluxes[0]);

  if (repeat > 0) {
    std::vector<double> us(repeat);
    for (double& t : us) {
      const auto start = std::chrono::steady_clock::now();
      loader.run(faces);
      t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    }
    // The median, because a few calls preempted by the OS would drag a mean.
    std::nth_element(us.begin(), us.begin() + repeat / 2, us.end());
    std::cout << "median_us=" << us[repeat / 2] << " calls=" << repeat << " batch=" << faces[0].size(0) << "\n";
  }
  return 0;
}

// The AOTI runtime's messages end in a newline (and it has already printed them once).
void report(std::string message) {
  while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) message.pop_back();
  std::cerr << "flux: " << message << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage = "usage: flux [--repeat N] model_aoti.pt2 faces.bin fluxes.bin\n";
  std::vector<std::string> paths;
  long repeat = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--repeat") {
      char* end = nullptr;
      repeat = i + 1 < argc ? std::strtol(argv[++i], &end, 10) : 0;
      if (repeat <= 0 || *end != '\0') {
        std::cerr << "flux: --repeat needs a positive integer\n" << usage;
        return 2;
      }
    } else {
      paths.push_back(arg);
    }
  }
  if (paths.size() != 3) {
    std::cerr << usage;
    return 2;
  }
  try {
    return run(paths[0], paths[1], paths[2], repeat);
  } catch (const c10::Error& e) {
    // A package that does not load or a batch the model refuses (e.g. the wrong column count).
    report(e.what_without_backtrace());
  } catch (const std::exception& e) {
    report(e.what());
  }
  return 1;
}
