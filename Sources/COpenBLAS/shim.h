#include <cblas.h>
// OpenBLAS extensions (declared in its cblas.h on Debian; repeated here for other layouts).
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);
// LAPACK's Cholesky factorisation and solve (OpenBLAS ships LAPACK; Fortran calling convention).
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a, const int *lda, double *b, const int *ldb, int *info);
// The inverse from a Cholesky factor (for SparseGPT's H⁻¹).
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);
